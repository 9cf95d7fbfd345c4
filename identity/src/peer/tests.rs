use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use super::*;

const STAT: &str =
    "4242 (a b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 0 0 0 20 0 1 0 987654 8036352 220";

#[test]
fn the_start_time_is_field_22_even_with_parentheses_in_the_name() {
    assert_eq!(parse_start_time(STAT), Some(987_654));
    assert_eq!(parse_start_time("12 (x) S 1"), None);
    assert_eq!(parse_start_time("garbage"), None);
}

#[test]
fn the_pid_of_a_pidfd_is_read_from_its_fdinfo() {
    assert_eq!(
        parse_fdinfo_pid(
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1\nPid:\t317\nNSpid:\t317\n"
        ),
        Some(317)
    );
    assert_eq!(parse_fdinfo_pid("Pid:\t-1\n"), Some(-1));
    assert_eq!(parse_fdinfo_pid("pos:\t0\n"), None);
}

/// When set, the test binary only connects to this socket and waits: a peer in another process.
const CONNECT_TO: &str = "PHANTOM_IDENTITY_TEST_CONNECT_TO";

#[test]
fn connect_and_wait_as_a_peer() {
    let Some(path) = std::env::var_os(CONNECT_TO) else {
        return;
    };
    let _stream = UnixStream::connect(path).expect("connect");
    std::thread::sleep(Duration::from_secs(30));
}

fn spawn_peer(path: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "peer::tests::connect_and_wait_as_a_peer",
            "--nocapture",
        ])
        .env(CONNECT_TO, path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the peer")
}

#[test]
fn a_peer_in_another_process_is_pinned_and_its_exit_is_noticed() {
    let dir = std::env::temp_dir().join(format!("phantom-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("peer.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let mut child = spawn_peer(&path);
    let (stream, _) = listener.accept().unwrap();
    let proc_root = Path::new("/proc");
    let peer = Peer::of(&stream, proc_root).expect("the peer");
    assert_eq!(peer.pid, i32::try_from(child.id()).unwrap());
    assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
    let cgroup = peer.read_proc(proc_root, "cgroup").expect("its cgroup");
    assert!(!cgroup.is_empty());

    // Both pins notice the exit: a PID that no longer names the peer is never read as its.
    let by_start_time =
        Peer::pinned_by_start_time(peer.pid, peer.uid, proc_root).expect("its start time");
    child.kill().unwrap();
    child.wait().unwrap();
    for pinned in [&peer, &by_start_time] {
        let err = pinned.check(proc_root).unwrap_err();
        assert!(
            matches!(err, Error::PeerGone { .. }),
            "{:?}: {err}",
            pinned.pinning()
        );
        let err = pinned.read_proc(proc_root, "cgroup").unwrap_err();
        assert!(
            matches!(err, Error::PeerGone { .. } | Error::Procfs { .. }),
            "{:?}: {err}",
            pinned.pinning()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernels_with_pidfds_pin_by_pidfd() {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    let peer = Peer::of(&ours, Path::new("/proc")).expect("ourselves");
    assert_eq!(peer.pid, i32::try_from(std::process::id()).unwrap());
    // SO_PEERPIDFD is Linux ≥ 6.5; older kernels take the start-time pin.
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned());
    let new_enough = release.as_deref().ok().and_then(|r| {
        let mut parts = r.split(|c: char| !c.is_ascii_digit());
        Some((
            parts.next()?.parse::<u32>().ok()?,
            parts.next()?.parse::<u32>().ok()?,
        ))
    }) >= Some((6, 5));
    if new_enough {
        assert_eq!(peer.pinning(), Pinning::Pidfd);
    }
}
