use super::*;

fn protection() -> Protection {
    Protection {
        detections: [Detection::Ptrace, Detection::ProcEnviron]
            .into_iter()
            .collect(),
        action: Action::Stop,
        cookie: 0x0102_0304_0506_0708,
    }
}

#[test]
fn detection_bits_are_the_c_programs() {
    let bits: Vec<u32> = Detection::ALL.iter().map(|d| d.bit()).collect();
    assert_eq!(bits, [1, 2, 4, 8, 16]);
    assert_eq!(Detections::all().bits(), 31);
    assert_eq!(Detections::from_bits(32), None, "unknown bits are refused");
    let set = protection().detections;
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        [Detection::Ptrace, Detection::ProcEnviron]
    );
}

#[test]
fn a_thread_entry_round_trips_in_the_c_layout() {
    let entry = ThreadEntry {
        protection: protection(),
        host_tid: 4242,
        host_tgid: 4240,
        own: Some(NsId {
            ns_inum: 0xf000_0001,
            id: 7,
        }),
    };
    let bytes = entry.encode();
    // struct guard_protection: detections, action, cookie, host_tid, host_tgid, own{inum, id}.
    assert_eq!(u32_at(&bytes, 0), 1 | 4);
    assert_eq!(u32_at(&bytes, 4), 1);
    assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_ne_bytes());
    assert_eq!((u32_at(&bytes, 16), u32_at(&bytes, 20)), (4242, 4240));
    assert_eq!((u32_at(&bytes, 24), u32_at(&bytes, 28)), (0xf000_0001, 7));
    assert_eq!(ThreadEntry::decode(&bytes).unwrap(), entry);
    let unknown_own = ThreadEntry { own: None, ..entry };
    assert_eq!(
        ThreadEntry::decode(&unknown_own.encode()).unwrap().own,
        None
    );
    let key = NsId { ns_inum: 9, id: 10 };
    assert_eq!(NsId::decode(key.encode()), key);
}

fn event_bytes(detection: u32, action: u32, comm: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; Event::LEN];
    b[0..8].copy_from_slice(&77u64.to_ne_bytes());
    for (at, v) in [
        (8, detection),
        (12, action),
        (16, 100),
        (20, 101),
        (24, 1000),
        (28, 0xeffffffc),
        (32, 200),
        (36, 5),
        (40, 16),
    ] {
        b[at..at + 4].copy_from_slice(&u32::to_ne_bytes(v));
    }
    b[48..48 + comm.len()].copy_from_slice(comm);
    b[64..72].copy_from_slice(&0x1234u64.to_ne_bytes());
    b
}

#[test]
fn an_event_decodes_every_field() {
    let event = Event::decode(&event_bytes(1, 1, b"gdb")).unwrap();
    assert_eq!(
        event,
        Event {
            cookie: 77,
            detections: [Detection::Ptrace].into_iter().collect(),
            action: Action::Stop,
            actor_tgid: 100,
            actor_tid: 101,
            actor_uid: 1000,
            actor_pidns_inum: 0xeffffffc,
            target_host_tgid: 200,
            target_arg: 5,
            request: 16,
            comm: "gdb".into(),
            actor_cgroup: 0x1234,
        }
    );
    // A full-length comm has no terminator.
    let full = Event::decode(&event_bytes(2, 0, b"0123456789abcdef")).unwrap();
    assert_eq!(full.comm, "0123456789abcdef");
}

#[test]
fn a_malformed_event_is_an_error_not_a_guess() {
    for (bytes, says) in [
        (vec![0u8; 64], "64 bytes"),
        (event_bytes(0, 0, b"x"), "detection"),
        (event_bytes(64, 0, b"x"), "detection"),
        (event_bytes(1, 2, b"x"), "action"),
    ] {
        let error = Event::decode(&bytes).unwrap_err().to_string();
        assert!(error.contains(says), "{says}: {error}");
    }
}

#[test]
fn config_and_cgroup_values_are_laid_out_as_in_c() {
    let config = encode_config(CgroupMode::V1Memory, 0xeffffffc);
    assert_eq!((u32_at(&config, 0), u32_at(&config, 4)), (1, 0xeffffffc));
    assert_eq!(u32_at(&encode_config(CgroupMode::V2, 1), 0), 2);
    assert_eq!(u32_at(&encode_config(CgroupMode::None, 1), 0), 0);
    let value = encode_cgroup_protection(&protection());
    assert_eq!((u32_at(&value, 0), u32_at(&value, 4)), (5, 1));
    assert_eq!(&value[8..16], &0x0102_0304_0506_0708u64.to_ne_bytes());
}

#[test]
fn policy_detections_and_actions_map_to_the_kernel_sides() {
    use phantom_crds::{Detection as D, MonitoringAction};
    assert_eq!(detections_for(D::ALL), Detections::all());
    assert_eq!(
        detections_for([D::ProcMem]).iter().collect::<Vec<_>>(),
        [Detection::ProcMem, Detection::ProcMaps]
    );
    assert_eq!(
        detections_for([D::ProcessVmReadv])
            .iter()
            .collect::<Vec<_>>(),
        [Detection::ProcessVm]
    );
    assert_eq!(detections_for([]), Detections::default());
    assert_eq!(action_for(MonitoringAction::Alert), Action::Alert);
    assert_eq!(action_for(MonitoringAction::Block), Action::Stop);
}
