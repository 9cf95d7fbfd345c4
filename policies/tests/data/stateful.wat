;; allows only its first call: proves every evaluation gets a fresh instance
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"allowed\":true}")
  (global $calls (mut i32) (i32.const 0))
  (func (export "phantom_abi_version") (result i32) i32.const 1)
  (func (export "phantom_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "phantom_evaluate") (param i32 i32) (result i64)
    (if (result i64) (i32.eqz (global.get $calls)) (then (global.set $calls (i32.const 1)) (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 16))) (else (i64.const 0)))))
