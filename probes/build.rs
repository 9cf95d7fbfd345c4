//! Compiles the guard's eBPF programs (`bpf/guard.bpf.c`) with clang `-target bpf`, against a
//! `vmlinux.h` dumped by bpftool from the build host's kernel BTF (CO-RE relocations make the
//! object load on other kernels). `make bpf-deps` installs clang, libbpf-dev and bpftool.

use std::path::{Path, PathBuf};
use std::process::Command;

const HINT: &str = "phantom-probes compiles the guard's eBPF programs with clang, libbpf's headers and bpftool: run `make bpf-deps` (apt-get install clang libbpf-dev bpftool)";

fn run(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e}; {HINT}",
            command.get_program()
        )
    });
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.stdout
}

fn main() {
    let source = Path::new("bpf/guard.bpf.c");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=PHANTOM_BPF_BTF");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let btf = std::env::var("PHANTOM_BPF_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    let vmlinux = run(
        Command::new("bpftool").args(["btf", "dump", "file", &btf, "format", "c"]),
        &format!("dumping the kernel's BTF ({btf}) into vmlinux.h"),
    );
    std::fs::write(out.join("vmlinux.h"), vmlinux).expect("writing vmlinux.h");
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => panic!("the guard's eBPF programs are not built for {other}"),
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    };
    let object = out.join("guard.bpf.o");
    run(
        Command::new("clang")
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(&out)
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object),
        "compiling bpf/guard.bpf.c",
    );
}
