//! The guard's cost and speed on this machine's kernel (root; prints figures, asserts nothing).
//!
//! 1. Overhead: a syscall-heavy loop — open/read/close of a file, getpid, fork+exec of
//!    `/bin/true` — with the guard absent, loaded (nothing protected) and loaded with 100
//!    protected processes, interleaved over rounds so drift hits every configuration alike.
//!    `openat` is traced on every call; `getpid` is not (the control).
//! 2. Detection latency: from an accessor's `openat` of a protected process's
//!    `/proc/<pid>/environ` to the event read from the ring buffer (CLOCK_MONOTONIC on both
//!    sides), p50/p99.
//! 3. Load time of the guard (programs loaded, verified and attached).
//!
//! `cargo bench -p phantom-probes --bench guard`

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use phantom_probes::guard::abi::{Action, CgroupMode, Detections, Protection};
use phantom_probes::guard::kernel::{Guard, Options};

const ROUNDS: usize = 7;
const OPENS: usize = 20_000;
const GETPIDS: usize = 200_000;
const SPAWNS: usize = 200;

fn options() -> Options {
    Options {
        may_stop: false,
        try_lsm: true,
        cgroup_mode: CgroupMode::None,
        proc_root: "/proc".into(),
    }
}

fn protection() -> Protection {
    Protection {
        detections: Detections::all(),
        action: Action::Alert,
        cookie: 1,
    }
}

/// Nanoseconds per operation of each workload.
fn workload() -> [f64; 3] {
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..OPENS {
        let mut file = std::fs::File::open("/etc/hostname").expect("/etc/hostname");
        let _ = file.read(&mut buf);
    }
    let opens = start.elapsed().as_nanos() as f64 / OPENS as f64;
    let start = Instant::now();
    for _ in 0..GETPIDS {
        std::hint::black_box(nix::unistd::getpid());
    }
    let getpids = start.elapsed().as_nanos() as f64 / GETPIDS as f64;
    let start = Instant::now();
    for _ in 0..SPAWNS {
        Command::new("/bin/true").status().expect("/bin/true");
    }
    let spawns = start.elapsed().as_nanos() as f64 / SPAWNS as f64;
    [opens, getpids, spawns]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sleepers(n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdout(Stdio::null())
                .spawn()
                .expect("sleep")
        })
        .collect()
}

fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: loading eBPF programs needs root");
        return;
    }
    // The accessor role of the latency measurement: print the time, then open.
    if let Ok(pid) = std::env::var("PHANTOM_GUARD_BENCH_ACCESS") {
        println!("{}", monotonic_ns());
        let _ = std::fs::read(format!("/proc/{pid}/environ"));
        return;
    }
    let configs = ["absent", "loaded", "loaded + 100 protected"];
    let mut figures: Vec<[Vec<f64>; 3]> = (0..3).map(|_| Default::default()).collect();
    let mut load_ms = Vec::new();
    let mut protected = sleepers(100);
    for _ in 0..ROUNDS {
        for (config, slot) in figures.iter_mut().enumerate() {
            let guard = match config {
                0 => None,
                _ => {
                    let start = Instant::now();
                    let mut guard = Guard::load(&options()).expect("the guard loads");
                    load_ms.push(start.elapsed().as_secs_f64() * 1e3);
                    if config == 2 {
                        for child in &protected {
                            guard
                                .protect_process(Path::new("/proc"), child.id(), protection())
                                .expect("protect");
                        }
                    }
                    Some(guard)
                }
            };
            let result = workload();
            for (i, value) in result.into_iter().enumerate() {
                slot[i].push(value);
            }
            drop(guard);
        }
    }
    println!("guard overhead ({ROUNDS} interleaved rounds, median ns/op; ratio to absent):");
    let absent: Vec<f64> = (0..3).map(|i| median(&mut figures[0][i].clone())).collect();
    for (config, slot) in configs.iter().zip(figures.iter_mut()) {
        let m: Vec<f64> = (0..3).map(|i| median(&mut slot[i])).collect();
        println!(
            "  {config:<24} open+read+close {:>8.0} ({:.3})  getpid {:>6.1} ({:.3})  fork+exec {:>9.0} ({:.3})",
            m[0],
            m[0] / absent[0],
            m[1],
            m[1] / absent[1],
            m[2],
            m[2] / absent[2]
        );
    }
    println!(
        "guard load (programs verified and attached): median {:.1} ms over {} loads",
        median(&mut load_ms),
        load_ms.len()
    );

    // Detection latency.
    let mut guard = Guard::load(&options()).expect("the guard loads");
    let victim = &protected[0];
    guard
        .protect_process(Path::new("/proc"), victim.id(), protection())
        .expect("protect");
    let mut events = guard.take_events().expect("events");
    let exe = std::env::current_exe().expect("the bench binary");
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let mut accessor = Command::new(&exe)
            .env("PHANTOM_GUARD_BENCH_ACCESS", victim.id().to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the accessor");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(accessor.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("a timestamp");
        let before: u64 = line.trim().parse().expect("a timestamp");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(event) = events.pop() {
                let _ = event.expect("an event");
                latencies.push((monotonic_ns().saturating_sub(before)) as f64 / 1e3);
                break;
            }
            assert!(Instant::now() < deadline, "no event within 2 s");
            std::hint::spin_loop();
        }
        let _ = accessor.wait();
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "detection → ring-buffer reader (busy-polling, from just before the accessor's openat): p50 {:.0} µs, p99 {:.0} µs over {}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    for child in &mut protected {
        let _ = child.kill();
        let _ = child.wait();
    }
}
