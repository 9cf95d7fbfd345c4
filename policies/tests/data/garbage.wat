;; returns text that is not JSON
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "not json at all")
  
  (func (export "phantom_abi_version") (result i32) i32.const 1)
  (func (export "phantom_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "phantom_evaluate") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 15))))
