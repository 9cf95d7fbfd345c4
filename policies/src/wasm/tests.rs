use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(host: &PluginHost, name: &str) -> Result<PluginModule, PluginFailure> {
    let bytes = fixture(name);
    host.load(&bytes, &module_digest(&bytes))
}

const LIMITS: PluginLimits = PluginLimits {
    timeout_ms: 50,
    memory_mib: 4,
};

#[test]
fn a_well_behaved_plugin_answers() {
    let host = PluginHost::new().expect("host");
    let module = load(&host, "allow.wat").expect("loads");
    let verdict = host
        .evaluate(&module, br#"{"request":{},"settings":{}}"#, LIMITS)
        .expect("evaluates");
    assert!(verdict.allowed);
}

#[test]
fn a_wrong_digest_is_refused() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load(&fixture("allow.wat"), &"0".repeat(64))
        .expect_err("digest mismatch");
    assert!(matches!(err, PluginFailure::DigestMismatch { .. }));
    assert!(
        err.to_string().contains("update the policy's sha256"),
        "{err}"
    );
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline() {
    let host = PluginHost::new().expect("host");
    let module = load(&host, "loop.wat").expect("loads");
    let started = std::time::Instant::now();
    assert_eq!(
        host.evaluate(&module, b"{}", LIMITS),
        Err(PluginFailure::Timeout(50))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the deadline did not stop the loop in time"
    );
    // The host stays healthy.
    let ok = load(&host, "allow.wat").expect("loads");
    assert!(
        host.evaluate(&ok, b"{}", LIMITS)
            .expect("evaluates")
            .allowed
    );
}

#[test]
fn unbounded_memory_growth_hits_the_limit() {
    let host = PluginHost::new().expect("host");
    let module = load(&host, "memory-hog.wat").expect("loads");
    assert_eq!(
        host.evaluate(&module, b"{}", LIMITS),
        Err(PluginFailure::MemoryLimit(4))
    );
}

#[test]
fn traps_garbage_and_missing_abi_are_clear_errors() {
    let host = PluginHost::new().expect("host");
    let trap = load(&host, "trap.wat").expect("loads");
    assert!(matches!(
        host.evaluate(&trap, b"{}", LIMITS),
        Err(PluginFailure::Trap(_))
    ));
    let garbage = load(&host, "garbage.wat").expect("loads");
    let err = host
        .evaluate(&garbage, b"{}", LIMITS)
        .expect_err("not JSON");
    assert!(
        matches!(err, PluginFailure::BadOutput(_)) && err.to_string().contains("not json"),
        "{err}"
    );
    assert!(
        matches!(load(&host, "imports.wat"), Err(PluginFailure::Imports(i)) if i == "env::now")
    );
    assert!(matches!(
        load(&host, "no-abi.wat"),
        Err(PluginFailure::Abi(_))
    ));
    assert!(matches!(
        host.load(b"\0asm garbage", &module_digest(b"\0asm garbage")),
        Err(PluginFailure::InvalidModule(_))
    ));
}

#[test]
fn every_evaluation_gets_a_fresh_instance() {
    let host = PluginHost::new().expect("host");
    let module = load(&host, "stateful.wat").expect("loads");
    for _ in 0..3 {
        assert!(
            host.evaluate(&module, b"{}", LIMITS)
                .expect("evaluates")
                .allowed,
            "state leaked between evaluations"
        );
    }
}

#[test]
fn modules_are_compiled_once_per_digest() {
    let host = PluginHost::new().expect("host");
    load(&host, "allow.wat").expect("loads");
    load(&host, "allow.wat").expect("loads again");
    assert_eq!(host.modules.lock().expect("cache").len(), 1);
}
