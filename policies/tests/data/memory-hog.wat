;; grows memory until refused, then traps
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"allowed\":true}")
  
  (func (export "phantom_abi_version") (result i32) i32.const 1)
  (func (export "phantom_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "phantom_evaluate") (param i32 i32) (result i64)
    (block $done (loop $grow (br_if $done (i32.lt_s (memory.grow (i32.const 16)) (i32.const 0))) (br $grow))) unreachable))
