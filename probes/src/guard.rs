//! `phantom-guard`'s core: eBPF programs that detect, and can stop, reads of protected pods'
//! memory by other processes — `ptrace` attach/seize, `process_vm_readv`/`writev`, and opening
//! `/proc/<pid>/mem`, `environ` or `maps` — scoped by the *victim*: only processes of protected
//! pods are checked, a process reading itself stays allowed.
//!
//! - [`abi`]: the byte layout shared with `probes/bpf/guard.bpf.c`;
//! - [`procfs`]: finding a process's threads, pid namespaces and cgroup;
//! - [`kernel`]: loading the programs on the strongest path the kernel accepts (BPF LSM, else
//!   syscall tracepoints) and keeping the protected set.
//!
//! The kernel side keeps the set current by itself: an exec inside a protected cgroup and every
//! fork/clone of a protected task are covered in the kernel, before the new program runs; exits
//! remove their entries.

pub mod abi;
pub mod daemon;
pub mod kernel;
pub mod procfs;
pub mod report;
pub mod resume;
