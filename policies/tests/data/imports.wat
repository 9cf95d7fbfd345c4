;; imports a host function, which plugins may not do
(module
  (import "env" "now" (func $now (result i64)))
  (memory (export "memory") 1)
  (func (export "phantom_abi_version") (result i32) i32.const 1)
  (func (export "phantom_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "phantom_evaluate") (param i32 i32) (result i64) call $now))
