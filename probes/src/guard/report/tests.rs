use super::*;
use crate::guard::abi::Detections;

fn event(action: Action) -> Event {
    Event {
        cookie: 1,
        detections: [Detection::ProcEnviron].into_iter().collect::<Detections>(),
        action,
        actor_tgid: 4242,
        actor_tid: 4242,
        actor_uid: 0,
        actor_pidns_inum: 1,
        target_host_tgid: 100,
        target_arg: 100,
        request: 0,
        comm: "cat".into(),
        actor_cgroup: 0,
    }
}

const TRACEPOINT: Mode = Mode {
    path: CheckPath::Tracepoint,
    may_stop: true,
};

#[test]
fn the_message_names_the_accessor_its_pod_and_the_action() {
    let e = event(Action::Stop);
    let taken = Taken::of(&e, TRACEPOINT);
    assert_eq!(taken, Taken::Killed);
    let host = message(&e, &Actor::default(), taken, 0);
    assert_eq!(
        host,
        "proc-environ access to process 100 by pid 4242 (\"cat\", uid 0), not in a pod on this node (node root or a host process): the accessor was killed before the call returned (action block)"
    );
    let in_pod = message(
        &event(Action::Alert),
        &Actor {
            pod: Some(("tools/debug-7".into(), "shell".into())),
        },
        Taken::Alerted,
        3,
    );
    assert!(
        in_pod.contains("pod tools/debug-7, container shell")
            && in_pod.contains("allowed (action alert)")
            && in_pod.ends_with("; 3 identical accesses since the last report"),
        "{in_pod}"
    );
    assert_eq!(
        Taken::of(
            &e,
            Mode {
                path: CheckPath::Lsm,
                may_stop: true
            }
        ),
        Taken::Refused
    );
    assert_eq!(reason(primary(&e)), "MemoryAccessProcEnviron");
}

fn key(comm: &str) -> RepeatKey {
    RepeatKey {
        victim_pod: "shop/web-1".into(),
        detection: Detection::ProcEnviron,
        actor_comm: comm.into(),
        actor_uid: 0,
        taken: Taken::Alerted,
    }
}

#[test]
fn identical_repeats_are_folded_and_counted_never_lost() {
    let mut limiter = RateLimiter::new(Duration::from_secs(10));
    let t0 = Instant::now();
    assert_eq!(limiter.admit(key("cat"), t0), Admit::Report { folded: 0 });
    for i in 1..=5 {
        assert_eq!(
            limiter.admit(key("cat"), t0 + Duration::from_secs(i)),
            Admit::Fold
        );
    }
    // Another accessor is not a repeat.
    assert_eq!(
        limiter.admit(key("gdb"), t0 + Duration::from_secs(2)),
        Admit::Report { folded: 0 }
    );
    assert!(limiter.due(t0 + Duration::from_secs(9)).is_empty());
    // The window passed with folded repeats and no new access: they are reported by `due`.
    assert_eq!(
        limiter.due(t0 + Duration::from_secs(10)),
        vec![(key("cat"), 5)]
    );
    assert!(limiter.due(t0 + Duration::from_secs(30)).is_empty());
    // A new access after a quiet window reports at once.
    assert_eq!(
        limiter.admit(key("cat"), t0 + Duration::from_secs(40)),
        Admit::Report { folded: 0 }
    );
    // Or, when it comes after the window with repeats still folded, carries them.
    limiter.admit(key("cat"), t0 + Duration::from_secs(41));
    assert_eq!(
        limiter.admit(key("cat"), t0 + Duration::from_secs(51)),
        Admit::Report { folded: 1 }
    );
}
