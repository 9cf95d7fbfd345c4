//! The development file provider through the real binaries: `phantom-proxy` reads a JSON file,
//! `phantom-exec` gives the application its variable, and the proxy says loudly that this mode
//! is not secure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn dev_file_provider_feeds_phantom_exec() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("secrets/secret/shop")).expect("dirs");
    std::fs::write(
        dir.path().join("secrets/secret/shop/db.json"),
        r#"{"password": "dev-only-value"}"#,
    )
    .expect("secret file");
    let socket = dir.path().join("run/proxy.sock");
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": "dev"},
                 "secrets": [{"name": "password", "path": "shop/db", "key": "password",
                              "delivery": [{"kind": "env", "name": "DB_PASSWORD"}]}]}
    }]);
    let log = dir.path().join("proxy.log");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_phantom-proxy"))
        .env_clear()
        .env("PHANTOM_DEV_FILE_PROVIDER", dir.path().join("secrets"))
        .env("PHANTOM_SOCKET", &socket)
        .env("PHANTOM_SECRETS_DIR", dir.path().join("run"))
        .env("PHANTOM_PLAN", plan.to_string())
        .env("PHANTOM_WRAPPED_CONTAINERS", "app")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("phantom-proxy");
    let app = Command::new(env!("CARGO_BIN_EXE_phantom-exec"))
        .args([
            "--container",
            "app",
            "--",
            "/bin/sh",
            "-c",
            "printf %s \"$DB_PASSWORD\"",
        ])
        .env("PHANTOM_SOCKET", &socket)
        .env("PHANTOM_EXEC_WAIT_SECONDS", "20")
        .output()
        .expect("phantom-exec");
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(5) && !text.contains("development only") {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(
        app.status.success(),
        "{}",
        String::from_utf8_lossy(&app.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&app.stdout), "dev-only-value");
    assert!(
        text.contains("development only"),
        "the proxy warns about the file provider:\n{text}"
    );
    assert!(
        !text.contains("dev-only-value"),
        "the value is in the log:\n{text}"
    );
}
