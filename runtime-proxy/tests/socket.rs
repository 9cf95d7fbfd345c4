//! The socket API over a real Unix socket: list, get, watch events on a new version, health when
//! degraded, and the SO_PEERCRED check refusing a peer with another uid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use phantom_runtime_proxy::SecretValue;
use phantom_runtime_proxy::socket::{Contents, Delivered, SocketState, serve, serve_containers};
use serde_json::Value;

fn contents(version: u64, degraded: bool) -> Contents {
    Contents {
        secrets: BTreeMap::from([(
            "db".to_owned(),
            Delivered {
                value: SecretValue::new(format!("value-v{version}")),
                version,
                lease: None,
            },
        )]),
        env: BTreeMap::new(),
        socket: BTreeSet::from(["db".to_owned()]),
        files: BTreeSet::new(),
        degraded,
        withdrawn: None,
    }
}

async fn connect(socket: &Path) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn get(socket: &Path, path: &str) -> (u16, Value) {
    let mut sender = connect(socket).await;
    let req = hyper::Request::get(path)
        .header("host", "phantom")
        .body(Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("json"))
}

#[tokio::test]
async fn list_get_watch_and_health() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join(".phantom/proxy.sock");
    let state = SocketState::new(None);
    state.publish(contents(1, false));
    let _server = serve(state.clone(), &socket).expect("serve");

    let (status, list) = get(&socket, "/v1/secrets").await;
    assert_eq!(status, 200);
    assert_eq!(list["secrets"][0]["name"], "db");
    assert!(
        !list.to_string().contains("value-v1"),
        "listing shows no values"
    );
    let (_, one) = get(&socket, "/v1/secrets/db").await;
    assert_eq!(one["value"], "value-v1");
    assert_eq!(get(&socket, "/v1/secrets/nope").await.0, 404);

    let mut sender = connect(&socket).await;
    let req = hyper::Request::get("/v1/watch")
        .header("host", "phantom")
        .body(Empty::new())
        .expect("request");
    let mut body = sender.send_request(req).await.expect("watch").into_body();
    tokio::time::sleep(Duration::from_millis(50)).await;
    state.publish(contents(2, false));
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event within 5 s")
        .expect("a frame")
        .expect("data");
    let event: Value = serde_json::from_slice(frame.data_ref().expect("data")).expect("ndjson");
    assert_eq!(
        event,
        serde_json::json!({"type": "changed", "name": "db", "version": 2})
    );
    assert!(
        !event.to_string().contains("value-v2"),
        "events carry versions, not values"
    );

    assert_eq!(
        get(&socket, "/v1/healthz").await,
        (200, serde_json::json!({"status": "ok", "secrets": 1}))
    );
    state.publish(contents(2, true));
    assert_eq!(get(&socket, "/v1/healthz").await.0, 503);
}

#[tokio::test]
async fn a_peer_with_another_uid_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("proxy.sock");
    // Our uid, read off a file we create (no libc call needed).
    std::fs::write(dir.path().join("probe"), b"").expect("probe");
    let me = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(dir.path().join("probe")).expect("meta"),
    );
    let state: Arc<SocketState> = SocketState::new(Some(me.wrapping_add(1)));
    state.publish(contents(1, false));
    let _server = serve(state, &socket).expect("serve");
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("connect");
    let handshake =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await;
    let refused = match handshake {
        Err(_) => true,
        Ok((mut sender, connection)) => {
            tokio::spawn(connection);
            let req = hyper::Request::get("/v1/secrets/db")
                .header("host", "p")
                .body(Empty::new())
                .expect("request");
            sender.send_request(req).await.is_err()
        }
    };
    assert!(refused, "a peer with another uid was served");
}

#[test]
fn a_peer_outside_the_pid_namespace_is_never_signalled() {
    // The kernel reports pid 0 for such a peer; kill(0, SIGHUP) would hit the sidecar itself.
    assert_eq!(phantom_runtime_proxy::socket::signallable(Some(0)), None);
    assert_eq!(phantom_runtime_proxy::socket::signallable(Some(-1)), None);
    assert_eq!(phantom_runtime_proxy::socket::signallable(None), None);
    assert_eq!(
        phantom_runtime_proxy::socket::signallable(Some(42)),
        Some(42)
    );
}

/// Two wrapped containers, each on its own socket: a container reads its own environment and
/// the secrets delivered over the socket, never another container's environment.
#[tokio::test]
async fn each_containers_socket_answers_what_its_deliveries_say() {
    let dir = tempfile::tempdir().expect("dir");
    let state = SocketState::new(None);
    let secret = |v: &str| Delivered {
        value: SecretValue::new(v.to_owned()),
        version: 1,
        lease: None,
    };
    state.publish(Contents {
        secrets: BTreeMap::from([
            ("db".to_owned(), secret("db-value")),
            ("api".to_owned(), secret("api-value")),
            ("bonly".to_owned(), secret("b-only-value")),
            ("tls".to_owned(), secret("tls-value")),
        ]),
        env: BTreeMap::from([
            (
                "a".to_owned(),
                BTreeMap::from([("API".to_owned(), "api".to_owned())]),
            ),
            (
                "b".to_owned(),
                BTreeMap::from([("B_ONLY".to_owned(), "bonly".to_owned())]),
            ),
        ]),
        socket: BTreeSet::from(["db".to_owned()]),
        files: BTreeSet::from(["tls".to_owned()]),
        degraded: false,
        withdrawn: None,
    });
    let _server =
        serve_containers(state, dir.path(), &["a".to_owned(), "b".to_owned()]).expect("serve");
    let a = dir.path().join("a/proxy.sock");
    let b = dir.path().join("b/proxy.sock");

    let (status, env) = get(&a, "/v1/env?container=a").await;
    assert_eq!(
        (status, env["env"]["API"].as_str()),
        (200, Some("api-value"))
    );
    assert!(env["env"].get("B_ONLY").is_none(), "{env}");
    let (status, _) = get(&a, "/v1/env").await;
    assert_eq!(status, 200, "the socket knows its container");
    let (status, refused) = get(&a, "/v1/env?container=b").await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|m| m.contains("serves container a")),
        "{refused}"
    );
    assert!(!refused.to_string().contains("b-only-value"));

    let (status, db) = get(&b, "/v1/secrets/db").await;
    assert_eq!((status, db["value"].as_str()), (200, Some("db-value")));
    for name in ["api", "bonly", "tls"] {
        let (status, refused) = get(&b, &format!("/v1/secrets/{name}")).await;
        assert_eq!(
            status, 403,
            "{name}: only socket deliveries are served: {refused}"
        );
        assert!(!refused.to_string().contains("-value"), "{refused}");
    }
    let (_, listed) = get(&b, "/v1/secrets").await;
    let names: Vec<&str> = listed["secrets"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["bonly", "db", "tls"],
        "not container a's environment"
    );
    let (_, env) = get(&b, "/v1/env").await;
    assert_eq!(env["env"], serde_json::json!({"B_ONLY": "b-only-value"}));
}
