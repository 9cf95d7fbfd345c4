//! `phantom-exec` as a real process: it fetches its container's variables from the sidecar's
//! socket server (`phantom_runtime_proxy::socket`), then `exec`s the command — same PID, same exit code, variables set, values never in its own output.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use phantom_runtime_proxy::SecretValue;
use phantom_runtime_proxy::socket::{Contents, Delivered, SocketState, serve};

const EXEC: &str = env!("CARGO_BIN_EXE_phantom-exec");

/// The real socket server of the sidecar, with `DB_PASSWORD` for container `app`.
fn serve_env(socket: &Path, value: String) -> std::thread::JoinHandle<()> {
    let socket = socket.to_owned();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let state = SocketState::new(None);
            state.publish(Contents {
                secrets: BTreeMap::from([(
                    "password".to_owned(),
                    Delivered {
                        value: SecretValue::new(value),
                        version: 1,
                        lease: None,
                    },
                )]),
                env: BTreeMap::from([(
                    "app".to_owned(),
                    BTreeMap::from([("DB_PASSWORD".to_owned(), "password".to_owned())]),
                )]),
                ..Contents::default()
            });
            let server = serve(state, &socket).expect("serve");
            ready_tx.send(()).expect("ready");
            let _ = server.await;
        });
    });
    ready_rx.recv().expect("server started");
    handle
}

fn random() -> String {
    let mut buf = [0u8; 12];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut buf,
    )
    .expect("read");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_application_gets_its_variables_keeps_the_pid_and_its_exit_code() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("proxy.sock");
    let value = format!("s3cret-{}", random());
    serve_env(&socket, value.clone());
    let child = Command::new(EXEC)
        .args([
            "--container",
            "app",
            "--",
            "/bin/sh",
            "-c",
            "echo \"$DB_PASSWORD\"; echo $$; exit 7",
        ])
        .env("PHANTOM_SOCKET", &socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("phantom-exec");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(value.as_str()),
        "the application sees its secret"
    );
    assert_eq!(
        lines.get(1).copied(),
        Some(pid.to_string().as_str()),
        "exec keeps the PID"
    );
    assert_eq!(out.status.code(), Some(7), "the exit code passes through");
    assert!(
        stderr.contains("DB_PASSWORD") && !stderr.contains(&value),
        "names only: {stderr}"
    );
}

#[test]
fn refusals_and_a_missing_sidecar_fail_with_a_message() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("proxy.sock");
    let missing = Command::new(EXEC)
        .args(["--container", "app", "--", "/bin/true"])
        .env("PHANTOM_SOCKET", &socket)
        .env("PHANTOM_EXEC_WAIT_SECONDS", "1")
        .output()
        .expect("phantom-exec");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(70));
    assert!(
        stderr.contains("proxy.sock") && stderr.contains("phantom-proxy"),
        "{stderr}"
    );

    serve_env(&socket, "unused".into());
    let refused = Command::new(EXEC)
        .args(["--container", "other", "--", "/bin/true"])
        .env("PHANTOM_SOCKET", &socket)
        .output()
        .expect("phantom-exec");
    assert_eq!(refused.status.code(), Some(70));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("not wrapped"),
        "{stderr}"
    );

    let bad = Command::new(EXEC)
        .args(["--container", "app"])
        .output()
        .expect("phantom-exec");
    assert_eq!(bad.status.code(), Some(64));

    // A wait that would overflow the clock is refused with a message, not a panic.
    for wait in ["18446744073709551615", "soon"] {
        let huge = Command::new(EXEC)
            .args(["--container", "app", "--", "/bin/true"])
            .env("PHANTOM_SOCKET", &socket)
            .env("PHANTOM_EXEC_WAIT_SECONDS", wait)
            .output()
            .expect("phantom-exec");
        let stderr = String::from_utf8_lossy(&huge.stderr);
        assert_eq!(huge.status.code(), Some(64), "{wait}: {stderr}");
        assert!(stderr.contains("PHANTOM_EXEC_WAIT_SECONDS"), "{stderr}");
    }

    let not_found = Command::new(EXEC)
        .args(["--container", "app", "--", "/nonexistent/app"])
        .env("PHANTOM_SOCKET", &socket)
        .output()
        .expect("phantom-exec");
    assert_eq!(not_found.status.code(), Some(127));
}

#[test]
fn the_application_runs_with_core_dumps_off() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("proxy.sock");
    serve_env(&socket, random());
    let out = Command::new(EXEC)
        .args([
            "--container",
            "app",
            "--",
            "/bin/sh",
            "-c",
            "echo soft=$(ulimit -c) hard=$(ulimit -H -c)",
        ])
        .env("PHANTOM_SOCKET", &socket)
        .output()
        .expect("phantom-exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "soft=0 hard=0");
}

/// A sidecar that accepts the connection and never answers: `phantom-exec` gives up with a
/// message instead of hanging the container's start for ever.
#[test]
fn a_sidecar_that_never_answers_is_a_bounded_failure() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("proxy.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let silent = std::thread::spawn(move || {
        let held = listener.accept().expect("accept");
        std::thread::sleep(std::time::Duration::from_secs(10));
        drop(held);
    });
    let started = std::time::Instant::now();
    let out = Command::new(EXEC)
        .args(["--container", "app", "--", "/bin/true"])
        .env("PHANTOM_SOCKET", &socket)
        .env("PHANTOM_EXEC_WAIT_SECONDS", "2")
        .output()
        .expect("phantom-exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "bounded by the wait: {:?}",
        started.elapsed()
    );
    drop(silent);
}

#[test]
fn install_copies_an_executable_wrapper() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let dest = dir.path().join("phantom-exec");
    let status = Command::new(EXEC)
        .arg("install")
        .arg(&dest)
        .status()
        .expect("install");
    assert!(status.success());
    let mode = std::fs::metadata(&dest)
        .expect("installed")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(&dest).expect("copy"),
        std::fs::read(EXEC).expect("original")
    );
}
