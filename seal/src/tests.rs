use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use phantom_crds::wellknown::{DECISION_ANNOTATION, INJECTED_ANNOTATION};

use super::*;

const NOW: i64 = 1_800_000_000;

fn key() -> Key {
    Key::generate(NOW - 3600).expect("random")
}

/// A pod as admission answers it: generateName only, its decision recorded.
fn answered() -> Pod {
    let mut pod = Pod::default();
    pod.metadata.generate_name = Some("web-7d9f-".into());
    pod.metadata.annotations = Some(BTreeMap::from([
        (
            DECISION_ANNOTATION.to_owned(),
            r#"{"outcome":"injected"}"#.to_owned(),
        ),
        (INJECTED_ANNOTATION.to_owned(), "true".to_owned()),
    ]));
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.service_account_name = Some("web".into());
    spec.containers = vec![
        k8s_openapi::api::core::v1::Container {
            name: "app".into(),
            ..Default::default()
        },
        k8s_openapi::api::core::v1::Container {
            name: "phantom-proxy".into(),
            ..Default::default()
        },
    ];
    pod
}

/// `pod` sealed at `signed` and stored by the API server at `created`.
fn stored(key: &Key, mut pod: Pod, purpose: Purpose, signed: i64, created: i64) -> Pod {
    let seal = seal(key, &pod, "shop", purpose, signed).expect("sealed");
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SEAL_ANNOTATION.into(), seal);
    pod.metadata.namespace = Some("shop".into());
    if pod.metadata.name.is_none() {
        pod.metadata.name = Some(format!(
            "{}x2k4q",
            pod.metadata.generate_name.as_deref().unwrap_or_default()
        ));
    }
    pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
    pod
}

#[test]
fn a_record_admission_sealed_verifies_on_the_stored_pod() {
    let key = key();
    let pod = stored(&key, answered(), Purpose::Stored, NOW, NOW + 1);
    let sealed = check(&key, &pod).expect("verifies");
    assert_eq!(sealed.time, NOW);

    // A pod the request named verifies under its name.
    let mut named = answered();
    named.metadata.name = Some("web-0".into());
    let pod = stored(&key, named, Purpose::Stored, NOW, NOW);
    check(&key, &pod).expect("verifies");
}

#[test]
fn a_changed_record_name_or_service_account_breaks_the_seal() {
    let key = key();
    let pod = stored(&key, answered(), Purpose::Stored, NOW, NOW);
    type Edit = (&'static str, fn(&mut Pod));
    let edits: [Edit; 6] = [
        ("decision", |p| {
            p.metadata.annotations.as_mut().unwrap().insert(
                DECISION_ANNOTATION.into(),
                r#"{"outcome":"not-injected"}"#.into(),
            );
        }),
        ("injected removed", |p| {
            p.metadata
                .annotations
                .as_mut()
                .unwrap()
                .remove(INJECTED_ANNOTATION);
        }),
        ("namespace", |p| p.metadata.namespace = Some("other".into())),
        ("generateName and name", |p| {
            p.metadata.generate_name = Some("db-".into());
            p.metadata.name = Some("db-x2k4q".into());
        }),
        ("serviceAccount", |p| {
            p.spec.as_mut().unwrap().service_account_name = Some("admin".into());
        }),
        ("containers", |p| {
            p.spec.as_mut().unwrap().containers.pop();
        }),
    ];
    for (what, edit) in edits {
        let mut copy = pod.clone();
        edit(&mut copy);
        assert_eq!(check(&key, &copy), Err(Broken::Mismatch), "{what}");
    }
}

#[test]
fn another_key_a_dry_run_and_a_missing_seal_do_not_verify() {
    let key = key();
    let pod = stored(&key, answered(), Purpose::Stored, NOW, NOW);
    assert_eq!(check(&self::key(), &pod), Err(Broken::Mismatch));
    let dry = stored(&key, answered(), Purpose::DryRun, NOW, NOW);
    assert_eq!(check(&key, &dry), Err(Broken::Mismatch));
    let mut unsealed = pod.clone();
    unsealed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(SEAL_ANNOTATION);
    assert_eq!(check(&key, &unsealed), Err(Broken::Unsealed));
    for garbage in [
        "",
        "v1",
        "v2.1.AAAA.AAAA",
        "v1.x.AAAA.AAAA",
        "v1.1.AA.AAAA",
        "v1.1.%%.AAAA",
    ] {
        let mut broken = pod.clone();
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SEAL_ANNOTATION.into(), garbage.into());
        assert_eq!(check(&key, &broken), Err(Broken::Malformed), "{garbage:?}");
    }
}

#[test]
fn a_seal_made_far_from_the_pods_creation_is_untimely() {
    let key = key();
    let late = stored(&key, answered(), Purpose::Stored, NOW, NOW + 600);
    assert_eq!(check(&key, &late), Err(Broken::Untimely { seconds: 600 }));
    let edge = stored(
        &key,
        answered(),
        Purpose::Stored,
        NOW,
        NOW - MAX_SKEW_SECONDS,
    );
    check(&key, &edge).expect("within the skew");
}

#[test]
fn two_pods_admitted_alike_get_different_seals() {
    let key = key();
    let a = seal(&key, &answered(), "shop", Purpose::Stored, NOW).unwrap();
    let b = seal(&key, &answered(), "shop", Purpose::Stored, NOW).unwrap();
    assert_ne!(a, b);
}

#[test]
fn keys_round_trip_and_never_print() {
    let key = key();
    let text = key.encode();
    let back = Key::decode(&format!("{}\n", text.as_str()), "test").expect("decodes");
    assert_eq!(back.encode(), text);
    assert_eq!(back.sealed_from(), NOW - 3600);
    let encoded_secret = text.rsplit('.').next().unwrap().to_owned();
    assert!(!format!("{key:?}").contains(&encoded_secret));
    for bad in ["", "v1.1", "v2.1.AAAA", "v1.x.AAAA", "v1.1.AAAA", "v1.1.!!"] {
        let err = Key::decode(bad, "Secret phantom-system/phantom-webhook-tls").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("Secret phantom-system/phantom-webhook-tls"),
            "{message}"
        );
    }
    // A wrong-length key names the problem without echoing it.
    let short = format!("v1.1.{}", &encoded_secret[..20]);
    let message = Key::decode(&short, "file").unwrap_err().to_string();
    assert!(
        message.contains("32 bytes") && !message.contains(&encoded_secret[..20]),
        "{message}"
    );
}
