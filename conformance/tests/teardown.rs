//! Dropping an environment stops every process it started and removes its directory.

use std::path::Path;
use std::time::Duration;

use phantom_conformance::{Env, EnvOptions};

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_environment_stops_processes_and_removes_its_directory() {
    let options = EnvOptions {
        kubernetes_auth: false,
        ..EnvOptions::default()
    };
    let env = Env::start_with(options).await.expect("environment starts");
    let dir = env.dir().to_path_buf();
    let pids: Vec<String> = std::fs::read_to_string(dir.join("pids"))
        .expect("pid list")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        pids.len(),
        4,
        "expected etcd, kube-apiserver, openbao and kube-controller-manager: {pids:?}"
    );
    for pid in &pids {
        assert!(
            Path::new("/proc").join(pid).exists(),
            "process {pid} is not running before the drop"
        );
    }

    drop(env);

    for pid in &pids {
        // Killed and reaped children leave no /proc entry (not even a zombie).
        let mut gone = false;
        for _ in 0..50 {
            if !Path::new("/proc").join(pid).exists() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "process {pid} survived the environment's drop");
    }
    assert!(
        !dir.exists(),
        "{} survived the environment's drop",
        dir.display()
    );
}
