;; a valid module that is not a plugin
(module (memory (export "memory") 1) (func (export "main")))
