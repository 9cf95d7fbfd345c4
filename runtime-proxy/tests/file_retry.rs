//! A secret file that cannot be written in one round is written again within seconds, even though
//! the secret does not change again, and no temporary file holding part of it is left behind.
//! Through the real `phantom-proxy` with the development file provider, on a tmpfs (`/dev/shm`:
//! the sidecar refuses to write secrets to a disk-backed directory).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_failed_file_write_is_retried_and_leaves_no_partial_file() {
    if !Path::new("/dev/shm").is_dir() {
        eprintln!("skipped: no /dev/shm tmpfs on this machine for the secrets volume");
        return;
    }
    let dir = tempfile::tempdir_in("/dev/shm").expect("a tmpfs dir");
    let source = dir.path().join("source/secret/shop");
    std::fs::create_dir_all(&source).expect("dirs");
    std::fs::write(source.join("db.json"), r#"{"password": "first-value"}"#).expect("v1");
    let volume = dir.path().join("volume");
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": "dev"},
                 "secrets": [{"name": "password", "path": "shop/db", "key": "password",
                              "delivery": [{"kind": "file", "path": "db/password"}]}]}
    }]);
    let log = dir.path().join("proxy.log");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_phantom-proxy"))
        .env_clear()
        .env("PHANTOM_DEV_FILE_PROVIDER", dir.path().join("source"))
        .env("PHANTOM_SOCKET", volume.join(".phantom/proxy.sock"))
        .env("PHANTOM_SECRETS_DIR", &volume)
        .env("PHANTOM_PLAN", plan.to_string())
        .env("PHANTOM_REFRESH_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("phantom-proxy");
    let file = volume.join("db/password");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    wait_for(
        "the first value on the volume",
        Duration::from_secs(10),
        || read() == "first-value",
    );

    // A directory holds the file's place: the next round cannot rename the new value there.
    std::fs::remove_file(&file).expect("rm");
    std::fs::create_dir_all(file.join("in-the-way")).expect("blocker");
    std::fs::write(source.join("db.json"), r#"{"password": "second-value"}"#).expect("v2");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("a failed write in the log", Duration::from_secs(10), || {
        logged().contains("writing secret files failed")
    });
    assert_eq!(
        entries(&volume.join("db")),
        ["password"],
        "only the blocker: no temporary file with part of the value"
    );

    // Once the way is clear, a later round writes it, though the value has not changed since.
    std::fs::remove_dir_all(&file).expect("unblock");
    wait_for(
        "the second value written by a retry",
        Duration::from_secs(15),
        || read() == "second-value",
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(
        !logged().contains("second-value") && !logged().contains("first-value"),
        "values never reach the log:\n{}",
        logged()
    );
}
