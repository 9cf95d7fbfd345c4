//! The guard's kernel side on this machine's kernel: a victim process holding a secret in its
//! environment, and attackers that try each route to it (`PTRACE_ATTACH` + `PEEKDATA`,
//! `process_vm_readv`, reading `/proc/<pid>/mem` and `/proc/<pid>/environ`) and print what they
//! got. Alert: every attempt is reported with the attacker's identity and succeeds. Stop: every
//! attacker is stopped before the secret reaches its output, and the victim keeps running.
//! Unprotected: nothing reported. Also: a process reading itself, an exec inside a protected
//! cgroup (covered in the kernel before the program runs), and a caller in a shared pid
//! namespace naming the victim by its namespaced pid.
//!
//! Needs root (loading eBPF programs); skips with the reason otherwise. CI runs as root. The
//! victim and attackers are this test binary again, in another role.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use phantom_probes::guard::abi::{Action, CgroupMode, Detection, Detections, Event, Protection};
use phantom_probes::guard::kernel::{CheckPath, Events, Guard, Options};
use phantom_probes::guard::procfs;

const ROLE: &str = "PHANTOM_GUARD_TEST_ROLE";
type Case = fn() -> anyhow::Result<()>;
const SECRET_VAR: &str = "PHANTOM_GUARD_TEST_SECRET";

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        std::process::exit(play(&role));
    }
    let mut args = Arguments::from_args();
    // Each case loads its own guard and watches every process it starts: one at a time.
    args.test_threads = Some(1);
    let skip = skip_reason();
    let cases: Vec<(&str, Case)> = vec![
        (
            "alert_reports_every_route_with_the_attacker",
            alert_reports_every_route,
        ),
        (
            "stop_keeps_the_secret_from_every_attacker_and_the_victim_keeps_running",
            stop_keeps_the_secret,
        ),
        (
            "an_unprotected_process_raises_nothing",
            unprotected_raises_nothing,
        ),
        (
            "a_process_reading_itself_stays_allowed",
            reading_itself_is_allowed,
        ),
        (
            "an_exec_in_a_protected_cgroup_is_covered_in_the_kernel_before_it_runs",
            exec_in_protected_cgroup,
        ),
        (
            "a_caller_in_a_shared_pid_namespace_is_checked_by_its_namespaced_pid",
            shared_pid_namespace,
        ),
    ];
    let trials = cases
        .into_iter()
        .map(|(name, case)| {
            let skip = skip.clone();
            Trial::test(name, move || match skip {
                Some(reason) => {
                    eprintln!("skipped: {reason}");
                    Ok(())
                }
                None => case().map_err(|e| Failed::from(format!("{e:#}"))),
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("loading eBPF programs needs root; CI runs as root".into());
    }
    None
}

// ---- the roles ----

/// The victim: prints `ready`, then stays (reading its own environ by pid every 100 ms when
/// asked to), with a thread besides its main one.
fn victim() -> i32 {
    let _thread = std::thread::spawn(|| std::thread::sleep(Duration::from_secs(120)));
    let read_self = std::env::var("PHANTOM_GUARD_TEST_READ_SELF").is_ok();
    println!("ready {}", std::process::id());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if read_self {
            let own = format!("/proc/{}/environ", std::process::id());
            if std::fs::read(&own).is_ok() {
                println!("read-self");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    0
}

/// The environment block's address range in `/proc/<pid>/stat` (fields 50 and 51).
fn env_range(pid: i32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // The first field after the command is field 3.
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("stat field {n}"))?
            .parse()?)
    };
    Ok((field(50)?, field(51)?))
}

/// An attacker: tries one route to the victim's environment and prints what it read.
fn attack(kind: &str, pid: i32) -> anyhow::Result<Vec<u8>> {
    use nix::sys::ptrace;
    use nix::unistd::Pid;
    let (start, end) = env_range(pid)?;
    let len = (end - start).min(4096) as usize;
    match kind {
        "environ" => Ok(std::fs::read(format!("/proc/{pid}/environ"))?),
        "mem" => {
            use std::io::{Seek as _, SeekFrom};
            let mut file = std::fs::File::open(format!("/proc/{pid}/mem"))?;
            file.seek(SeekFrom::Start(start))?;
            let mut buf = vec![0; len];
            file.read_exact(&mut buf)?;
            Ok(buf)
        }
        "vm-readv" => {
            use nix::sys::uio::{RemoteIoVec, process_vm_readv};
            let mut buf = vec![0; len];
            let read = process_vm_readv(
                Pid::from_raw(pid),
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &[RemoteIoVec {
                    base: start as usize,
                    len,
                }],
            )?;
            buf.truncate(read);
            Ok(buf)
        }
        "ptrace" => {
            let target = Pid::from_raw(pid);
            ptrace::attach(target)?;
            nix::sys::wait::waitpid(target, None)?;
            let mut out = Vec::new();
            let mut at = start;
            while at < start + len as u64 {
                let word = ptrace::read(target, at as ptrace::AddressType)?;
                out.extend_from_slice(&word.to_ne_bytes());
                at += 8;
            }
            ptrace::detach(target, None)?;
            Ok(out)
        }
        other => anyhow::bail!("unknown attack {other}"),
    }
}

fn play(role: &str) -> i32 {
    if role == "victim" {
        return victim();
    }
    let Some((kind, pid)) = role
        .strip_prefix("attack:")
        .and_then(|rest| rest.split_once(':'))
    else {
        eprintln!("unknown role {role}");
        return 2;
    };
    let pid: i32 = pid.parse().expect("a pid");
    match attack(kind, pid) {
        Ok(bytes) => {
            // What an exfiltrating attacker would write out.
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&bytes);
            0
        }
        Err(e) => {
            eprintln!("attack {kind} on {pid}: {e:#}");
            1
        }
    }
}

// ---- helpers ----

fn this_binary() -> PathBuf {
    std::env::current_exe().expect("the test binary")
}

struct Victim {
    child: Child,
    pid: u32,
    secret: String,
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secret() -> String {
    format!("guard-secret-{}", std::process::id() ^ rand_u32())
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    u32::from_ne_bytes(bytes)
}

/// Waits for a `ready <pid>` line on `child`'s stdout; returns the pid it printed.
fn wait_ready(child: &mut Child) -> anyhow::Result<u32> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(pid) = line.strip_prefix("ready ") {
                let _ = tx.send(pid.trim().parse::<u32>().ok());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow::anyhow!("the victim did not print ready within 10 s"))?
        .ok_or_else(|| anyhow::anyhow!("the victim printed no pid"))
}

fn start_victim(extra_env: &[(&str, &str)]) -> anyhow::Result<Victim> {
    let secret = secret();
    let mut child = Command::new(this_binary())
        .env(ROLE, "victim")
        .env(SECRET_VAR, &secret)
        .envs(extra_env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = wait_ready(&mut child)?;
    anyhow::ensure!(pid == child.id(), "the victim is the child");
    Ok(Victim { child, pid, secret })
}

struct Outcome {
    pid: u32,
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

fn run_attack(kind: &str, pid: u32) -> anyhow::Result<Outcome> {
    let child = Command::new(this_binary())
        .env(ROLE, format!("attack:{kind}:{pid}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let attacker = child.id();
    let output = wait_with_timeout(child, Duration::from_secs(20))?;
    Ok(Outcome {
        pid: attacker,
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn wait_with_timeout(child: Child, timeout: Duration) -> anyhow::Result<std::process::Output> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            anyhow::bail!("process {pid} did not finish within {timeout:?}")
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every event that arrives within `wait`.
fn drain(events: &mut Events, wait: Duration) -> anyhow::Result<Vec<Event>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match events.pop() {
            Some(event) => out.push(event?),
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(out)
}

fn load(may_stop: bool, cgroup_mode: CgroupMode) -> anyhow::Result<(Guard, Events)> {
    let mut guard = Guard::load(&Options {
        may_stop,
        try_lsm: true,
        cgroup_mode,
        proc_root: "/proc".into(),
    })?;
    if let Some(reason) = guard.lsm_refusal() {
        eprintln!(
            "BPF LSM not used: {reason}; running {}",
            guard.mode().as_str()
        );
    }
    let events = guard
        .take_events()
        .ok_or_else(|| anyhow::anyhow!("no event ring"))?;
    Ok((guard, events))
}

fn protection(action: Action, cookie: u64) -> Protection {
    Protection {
        detections: Detections::all(),
        action,
        cookie,
    }
}

const ROUTES: [(&str, Detection); 4] = [
    ("ptrace", Detection::Ptrace),
    ("vm-readv", Detection::ProcessVm),
    ("mem", Detection::ProcMem),
    ("environ", Detection::ProcEnviron),
];

/// Continues the victim until it has stayed running for 300 ms (a stopped attach leaves it
/// stopped; see `guard::resume`).
fn keep_running(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut running_since = Instant::now();
    while Instant::now() < deadline {
        if phantom_probes::guard::resume::continue_if_stopped(Path::new("/proc"), pid) {
            running_since = Instant::now();
        }
        if running_since.elapsed() > Duration::from_millis(300) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("the victim {pid} did not stay running")
}

// ---- the cases ----

fn alert_reports_every_route() -> anyhow::Result<()> {
    let (mut guard, mut events) = load(true, CgroupMode::None)?;
    let victim = start_victim(&[])?;
    let covered =
        guard.protect_process(Path::new("/proc"), victim.pid, protection(Action::Alert, 7))?;
    anyhow::ensure!(covered >= 2, "the victim's threads: {covered}");
    for (kind, detection) in ROUTES {
        let outcome = run_attack(kind, victim.pid)?;
        anyhow::ensure!(
            outcome.status.success() && contains(&outcome.stdout, &victim.secret),
            "alert lets {kind} through, yet it failed: {} {}",
            outcome.status,
            outcome.stderr
        );
        if kind == "ptrace" {
            keep_running(victim.pid)?;
        }
        let seen = drain(&mut events, Duration::from_millis(300))?;
        let event = seen
            .iter()
            .find(|e| e.actor_tgid == outcome.pid)
            .ok_or_else(|| anyhow::anyhow!("no event for {kind} by {}: {seen:?}", outcome.pid))?;
        anyhow::ensure!(
            event.detections.contains(detection)
                && event.action == Action::Alert
                && event.cookie == 7
                && event.target_host_tgid == victim.pid
                && event.actor_uid == 0
                && !event.comm.is_empty(),
            "{kind}: {event:?}"
        );
    }
    Ok(())
}

fn stop_keeps_the_secret() -> anyhow::Result<()> {
    let (mut guard, mut events) = load(true, CgroupMode::None)?;
    let victim = start_victim(&[])?;
    guard.protect_process(Path::new("/proc"), victim.pid, protection(Action::Stop, 8))?;
    for (kind, detection) in ROUTES {
        let outcome = run_attack(kind, victim.pid)?;
        anyhow::ensure!(
            !contains(&outcome.stdout, &victim.secret) && !outcome.status.success(),
            "{kind} got the secret out or succeeded: {} {}",
            outcome.status,
            outcome.stderr
        );
        if guard.mode().path == CheckPath::Tracepoint {
            use std::os::unix::process::ExitStatusExt as _;
            anyhow::ensure!(
                outcome.status.signal() == Some(9),
                "{kind}: the attacker was not killed: {}",
                outcome.status
            );
        }
        if kind == "ptrace" {
            keep_running(victim.pid)?;
        }
        let seen = drain(&mut events, Duration::from_millis(300))?;
        anyhow::ensure!(
            seen.iter().any(|e| e.actor_tgid == outcome.pid
                && e.detections.contains(detection)
                && e.action == Action::Stop),
            "{kind}: no stop event: {seen:?}"
        );
    }
    anyhow::ensure!(
        !procfs::is_stopped(Path::new("/proc"), victim.pid)
            && Path::new(&format!("/proc/{}", victim.pid)).exists(),
        "the victim did not keep running"
    );
    Ok(())
}

fn unprotected_raises_nothing() -> anyhow::Result<()> {
    let (_guard, mut events) = load(true, CgroupMode::None)?;
    let victim = start_victim(&[])?;
    for (kind, _) in ROUTES {
        let outcome = run_attack(kind, victim.pid)?;
        anyhow::ensure!(
            outcome.status.success(),
            "{kind} on an unprotected process failed: {}",
            outcome.stderr
        );
        if kind == "ptrace" {
            keep_running(victim.pid)?;
        }
    }
    let seen = drain(&mut events, Duration::from_millis(300))?;
    anyhow::ensure!(
        seen.is_empty(),
        "events for an unprotected process: {seen:?}"
    );
    Ok(())
}

fn reading_itself_is_allowed() -> anyhow::Result<()> {
    let (mut guard, mut events) = load(true, CgroupMode::None)?;
    let victim = start_victim(&[("PHANTOM_GUARD_TEST_READ_SELF", "1")])?;
    guard.protect_process(Path::new("/proc"), victim.pid, protection(Action::Stop, 9))?;
    let seen = drain(&mut events, Duration::from_secs(1))?;
    anyhow::ensure!(
        seen.is_empty(),
        "a process reading itself was reported: {seen:?}"
    );
    anyhow::ensure!(
        Path::new(&format!("/proc/{}", victim.pid)).exists(),
        "a process reading itself was stopped"
    );
    Ok(())
}

/// A cgroup of this test's own (removed on drop).
struct TestCgroup {
    dir: PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn test_cgroup(mode: CgroupMode) -> anyhow::Result<TestCgroup> {
    let root = match mode {
        CgroupMode::V1Memory => PathBuf::from("/sys/fs/cgroup/memory"),
        CgroupMode::V2 => PathBuf::from("/sys/fs/cgroup"),
        CgroupMode::None => anyhow::bail!("no cgroup hierarchy"),
    };
    let dir = root.join(format!("phantom-guard-test-{:08x}", rand_u32()));
    std::fs::create_dir(&dir)?;
    Ok(TestCgroup { dir })
}

fn exec_in_protected_cgroup() -> anyhow::Result<()> {
    let mode = procfs::detect_cgroup_mode(Path::new("/sys/fs/cgroup"));
    if mode == CgroupMode::None {
        eprintln!("skipped: no cgroup v1 memory hierarchy or cgroup v2 mounted");
        return Ok(());
    }
    let (mut guard, mut events) = load(true, mode)?;
    let cgroup = test_cgroup(mode)?;
    guard.protect_cgroup(
        procfs::cgroup_id(&cgroup.dir)?,
        protection(Action::Alert, 11),
    )?;
    // The shell moves itself into the cgroup and execs the victim: nothing in userspace names
    // the victim to the guard.
    let secret = secret();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\"",
            cgroup.dir.display()
        ))
        .arg(this_binary())
        .env(ROLE, "victim")
        .env(SECRET_VAR, &secret)
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = wait_ready(&mut child)?;
    let victim = Victim { child, pid, secret };
    // Covered from the exec on: the main thread by the exec, the thread it started by the clone.
    let entry = guard
        .entry(pid)?
        .ok_or_else(|| anyhow::anyhow!("the exec'd victim {pid} is not in the protected set"))?;
    anyhow::ensure!(
        entry.host_tgid == pid && entry.protection.cookie == 11,
        "{entry:?}"
    );
    let threads = procfs::threads(Path::new("/proc"), guard.host_pidns_inum(), pid)?;
    for thread in &threads {
        anyhow::ensure!(
            guard.entry(thread.host.id)?.is_some(),
            "thread {} of the victim is not covered",
            thread.host.id
        );
    }
    let outcome = run_attack("environ", victim.pid)?;
    let seen = drain(&mut events, Duration::from_millis(300))?;
    anyhow::ensure!(
        seen.iter()
            .any(|e| e.actor_tgid == outcome.pid && e.cookie == 11 && e.target_host_tgid == pid),
        "no event for the cgroup-protected victim: {seen:?}"
    );
    drop(victim);
    // Its exit removed it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while guard.entry(pid)?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the exited victim is still in the set"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn shared_pid_namespace() -> anyhow::Result<()> {
    if Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("skipped: util-linux's unshare is not installed");
        return Ok(());
    }
    let (mut guard, mut events) = load(true, CgroupMode::None)?;
    let secret = secret();
    let flag = std::env::temp_dir().join(format!("phantom-guard-go-{:08x}", rand_u32()));
    // In a new pid namespace (as containers of a pod sharing one): the victim, then — once the
    // test has protected it — an attacker naming it by its pid in that namespace.
    let script = format!(
        "PHANTOM_GUARD_TEST_ROLE=victim \"$0\" > /dev/null & v=$!; \
         while [ ! -e {flag} ]; do sleep 0.05; done; \
         PHANTOM_GUARD_TEST_ROLE=attack:environ:$v \"$0\"; echo \"attacker-exit $?\"; kill $v",
        flag = flag.display()
    );
    let mut shell = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .arg(this_binary())
        .env(SECRET_VAR, &secret)
        .stdout(Stdio::piped())
        .spawn()?;
    // Find the victim from the host: the process with this secret in its environment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let victim = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the namespaced victim did not start"
        );
        let found = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    contains(&env, &secret) && contains(&env, "PHANTOM_GUARD_TEST_ROLE=victim")
                })
            });
        if let Some(pid) = found {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Wait until it is the victim binary (not the shell about to exec it).
    std::thread::sleep(Duration::from_millis(200));
    guard.protect_process(Path::new("/proc"), victim, protection(Action::Alert, 12))?;
    let own = guard
        .entry(victim)?
        .and_then(|e| e.own)
        .ok_or_else(|| anyhow::anyhow!("the victim has no own-namespace key"))?;
    std::fs::write(&flag, b"")?;
    let mut output = String::new();
    shell
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?
        .read_to_string(&mut output)?;
    let _ = shell.wait();
    let _ = std::fs::remove_file(&flag);
    let seen = drain(&mut events, Duration::from_millis(300))?;
    let event = seen
        .iter()
        .find(|e| e.target_host_tgid == victim)
        .ok_or_else(|| anyhow::anyhow!("no event for the namespaced access: {seen:?}\n{output}"))?;
    anyhow::ensure!(
        event.target_arg == own.id
            && event.actor_pidns_inum == own.ns_inum
            && event.detections.contains(Detection::ProcEnviron),
        "{event:?} (victim {victim}, own {own:?})"
    );
    Ok(())
}
