//! The sidecar's socket API: HTTP/1.1 + JSON on a Unix socket inside the pod's memory volume.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/healthz` | `{"status": "ok" \| "degraded", "secrets": n}` (503 when degraded) |
//! | `GET /v1/secrets` | `{"secrets": [{"name", "version"}]}` — names, no values |
//! | `GET /v1/secrets/<name>` | `{"name", "version", "value"}` for a secret with a `socket` delivery |
//! | `GET /v1/env?container=<c>` | `{"env": {"VAR": "value"}}` for a wrapped container (used by `phantom-exec`) |
//! | `GET /v1/watch` | newline-delimited JSON events `{"type": "changed", "name", "version"}`, `{"type": "removed", "name"}` |
//!
//! **Each wrapped container has its own socket** ([`Caller::Container`]): admission mounts only
//! that container's socket directory into it, so which socket a connection arrived on says which
//! container is asking, and the answer is what that container's deliveries say: its own
//! environment (`container=` may name only itself), the secrets delivered over the socket, and
//! events for those, for files and for its own environment. A secret delivered as environment to
//! another container is neither served nor listed. [`Caller::Pod`], one socket for every
//! container, is for development and pods with one wrapped container.
//!
//! When Phantom withdraws the pod's secrets (OpenBao refused the pod, a key-release condition
//! refuses it now, or OpenBao stayed unreachable beyond the grace period), value requests and
//! `/v1/healthz` answer 503 with the reason, and watchers get a `removed` event per secret.
//!
//! Only a peer with the expected uid (SO_PEERCRED) is served: other processes that can reach a
//! socket get their connection closed.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::broadcast;

use crate::{Error, Result, SecretValue};

/// One delivered secret.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub value: SecretValue,
    /// KV version, or a count of credentials issued for a dynamic secret.
    pub version: u64,
    /// The lease of a dynamic secret.
    pub lease: Option<phantom_openbao::Lease>,
}

/// What the socket serves, replaced as a whole on every change.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    pub secrets: BTreeMap<String, Delivered>,
    /// Per wrapped container: variable name → secret name.
    pub env: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets with a `socket` delivery: what `/v1/secrets/<name>` serves.
    pub socket: BTreeSet<String>,
    /// Secrets with a `file` delivery (every target reads the files: their events are for all).
    pub files: BTreeSet<String>,
    /// Serving the last good values while OpenBao is unreachable.
    pub degraded: bool,
    /// Why nothing is served any more (no values: a refusal or the end of the grace period).
    pub withdrawn: Option<String>,
}

/// Shared state of the socket server.
#[derive(Debug)]
pub struct SocketState {
    contents: RwLock<Arc<Contents>>,
    /// Secrets changed (their new version) or removed (`None`).
    changes: broadcast::Sender<(String, Option<u64>)>,
    allowed_uid: Option<u32>,
    /// PIDs of the processes that fetched a container's environment: `phantom-exec` keeps its
    /// PID when it `exec`s, so these are the applications (SIGHUP rotation notices go here).
    applications: std::sync::Mutex<BTreeMap<String, i32>>,
    /// Whether a first fetch has been published.
    published: std::sync::atomic::AtomicBool,
}

impl SocketState {
    /// Serves only peers running as `allowed_uid` (`None`: any peer, for development).
    pub fn new(allowed_uid: Option<u32>) -> Arc<Self> {
        Arc::new(Self {
            contents: RwLock::default(),
            changes: broadcast::channel(256).0,
            allowed_uid,
            applications: std::sync::Mutex::default(),
            published: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Application PIDs by container, as learned from `/v1/env` callers (SO_PEERCRED).
    pub fn applications(&self) -> BTreeMap<String, i32> {
        self.applications
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Replaces the contents and announces every secret whose version changed or that is gone.
    pub fn publish(&self, next: Contents) {
        let mut current = self.contents.write().unwrap_or_else(|p| p.into_inner());
        let mut changed: Vec<(String, Option<u64>)> = next
            .secrets
            .iter()
            .filter(|(name, d)| {
                current
                    .secrets
                    .get(*name)
                    .is_none_or(|old| old.version != d.version)
            })
            .map(|(name, d)| (name.clone(), Some(d.version)))
            .collect();
        changed.extend(
            current
                .secrets
                .keys()
                .filter(|name| !next.secrets.contains_key(*name))
                .map(|name| (name.clone(), None)),
        );
        *current = Arc::new(next);
        drop(current);
        self.published
            .store(true, std::sync::atomic::Ordering::Release);
        for change in changed {
            let _ = self.changes.send(change);
        }
    }

    /// Whether the secrets have been delivered (a first fetch published).
    pub fn is_published(&self) -> bool {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the last good values are being served while OpenBao is unreachable.
    pub fn is_degraded(&self) -> bool {
        self.contents().degraded
    }

    /// What is being served now.
    pub fn contents(&self) -> Arc<Contents> {
        self.contents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Who is asking, by the socket the connection arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A wrapped container's own socket, mounted into that container only.
    Container(String),
    /// One socket for the whole pod: any container's environment by name, every secret.
    Pod,
}

impl Caller {
    /// Whether this caller may read secret `name`'s value from `/v1/secrets/<name>`.
    fn may_read(&self, contents: &Contents, name: &str) -> bool {
        match self {
            Caller::Pod => true,
            Caller::Container(_) => contents.socket.contains(name),
        }
    }

    /// Whether this caller may learn about (list, watch) secret `name`.
    fn may_see(&self, contents: &Contents, name: &str) -> bool {
        match self {
            Caller::Pod => true,
            Caller::Container(container) => {
                contents.socket.contains(name)
                    || contents.files.contains(name)
                    || contents
                        .env
                        .get(container)
                        .is_some_and(|vars| vars.values().any(|s| s == name))
            }
        }
    }
}

/// An answer of the socket API.
pub type Body = BoxBody<Bytes, Infallible>;

/// The socket API's answer to `req` from `caller` (whose process is `peer_pid`): the sidecar's
/// sockets and the node agent (per pod, for the container the caller proved) answer alike.
pub fn respond(
    state: &Arc<SocketState>,
    req: &Request<Incoming>,
    peer_pid: Option<i32>,
    caller: &Caller,
) -> Response<Body> {
    if req.uri().path() == "/v1/watch" {
        watch(state.clone(), caller.clone())
    } else {
        route(state, req, peer_pid, caller)
    }
}

/// Every answer, values or not, goes out of a buffer wiped when hyper is done with it, and the
/// JSON it was built from is wiped too (the `/v1/env` and `/v1/secrets/<name>` answers copy
/// values into it).
pub fn answer(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(phantom_openbao::secret::wiping_json(value)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"error": message}` with `status` (names only: no value ever goes into a message).
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    answer(status, json!({ "error": message }))
}

/// A peer pid that may be signalled: the kernel reports 0 for a peer outside this pid namespace
/// (no `shareProcessNamespace`), and `kill(0, …)` would signal the sidecar's own process group.
pub fn signallable(pid: Option<i32>) -> Option<i32> {
    pid.filter(|p| *p > 0)
}

fn route(
    state: &SocketState,
    req: &Request<Incoming>,
    peer_pid: Option<i32>,
    caller: &Caller,
) -> Response<Body> {
    let contents = state.contents();
    let path = req.uri().path();
    if let Some(reason) = &contents.withdrawn
        && path != "/v1/watch"
        && path != "/v1/secrets"
    {
        let status = if path == "/v1/healthz" {
            "withdrawn"
        } else {
            "unavailable"
        };
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": status, "error": format!("Phantom withdrew this pod's secrets: {reason}")}),
        );
    }
    match path {
        "/v1/healthz" => {
            let status = if contents.degraded { "degraded" } else { "ok" };
            let code = if contents.degraded {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            answer(
                code,
                json!({"status": status, "secrets": contents.secrets.len()}),
            )
        }
        "/v1/secrets" => answer(
            StatusCode::OK,
            json!({"secrets": contents
                .secrets
                .iter()
                .filter(|(n, _)| caller.may_see(&contents, n))
                .map(|(n, d)| json!({"name": n, "version": d.version}))
                .collect::<Vec<_>>()}),
        ),
        "/v1/env" => {
            let asked = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("container=")));
            let container = match (caller, asked) {
                (Caller::Pod, asked) => asked.unwrap_or_default(),
                (Caller::Container(own), None) => own.as_str(),
                (Caller::Container(own), Some(asked)) if asked == own => own.as_str(),
                (Caller::Container(own), Some(asked)) => {
                    return error(
                        StatusCode::FORBIDDEN,
                        format!("this socket serves container {own}, not {asked:?}"),
                    );
                }
            };
            let Some(vars) = contents.env.get(container) else {
                return error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "container {container:?} is not wrapped by Phantom in this pod (wrapped: {:?})",
                        contents.env.keys().collect::<Vec<_>>()
                    ),
                );
            };
            if let (Some(pid), Ok(mut apps)) = (signallable(peer_pid), state.applications.lock()) {
                apps.insert(container.to_owned(), pid);
            }
            let mut env = serde_json::Map::new();
            for (var, secret) in vars {
                match contents.secrets.get(secret) {
                    Some(d) => {
                        env.insert(var.clone(), json!(d.value.expose()));
                    }
                    None => {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("secret {secret} for {var} is not available yet"),
                        );
                    }
                }
            }
            answer(StatusCode::OK, json!({ "env": env }))
        }
        _ => match path.strip_prefix("/v1/secrets/") {
            Some(name) if !caller.may_read(&contents, name) => error(
                StatusCode::FORBIDDEN,
                format!(
                    "secret {name:?} is not delivered over the socket in this pod's bindings (a \
                     `socket` delivery serves it here)"
                ),
            ),
            Some(name) => match contents.secrets.get(name) {
                Some(d) => answer(
                    StatusCode::OK,
                    json!({"name": name, "version": d.version, "value": d.value.expose()}),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no secret {name:?} in this pod's bindings"),
                ),
            },
            None => error(
                StatusCode::NOT_FOUND,
                format!("no endpoint {path}; see GET /v1/secrets, /v1/env, /v1/watch, /v1/healthz"),
            ),
        },
    }
}

fn watch(state: Arc<SocketState>, caller: Caller) -> Response<Body> {
    let start = (state.changes.subscribe(), state, caller);
    let events = futures::stream::unfold(start, |(mut rx, state, caller)| async move {
        let event = loop {
            match rx.recv().await {
                Ok((name, version)) => {
                    // A removed secret is gone from the contents: it was visible if it is not
                    // another container's environment, which is all a removal can reveal.
                    let contents = state.contents();
                    if contents.secrets.contains_key(&name) && !caller.may_see(&contents, &name) {
                        continue;
                    }
                    break match version {
                        Some(version) => {
                            json!({"type": "changed", "name": name, "version": version})
                        }
                        None => json!({"type": "removed", "name": name}),
                    };
                }
                // A slow reader missed events: tell it to re-list rather than dropping silently.
                Err(broadcast::error::RecvError::Lagged(_)) => break json!({"type": "resync"}),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        };
        let line = Bytes::from(format!("{event}\n"));
        Some((Ok::<_, Infallible>(Frame::data(line)), (rx, state, caller)))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(events)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Binds `socket` (replacing a stale one) for the whole pod ([`Caller::Pod`]) and serves until
/// the task is dropped.
pub fn serve(state: Arc<SocketState>, socket: &Path) -> Result<tokio::task::JoinHandle<()>> {
    serve_as(state, socket, Caller::Pod)
}

/// Binds one socket per wrapped container, `<dir>/<container>/proxy.sock`, each answering only
/// its container; serves until the task is dropped.
pub fn serve_containers(
    state: Arc<SocketState>,
    dir: &Path,
    containers: &[String],
) -> Result<tokio::task::JoinHandle<()>> {
    let servers = containers
        .iter()
        .map(|c| {
            serve_as(
                state.clone(),
                &dir.join(c).join(CONTAINER_SOCKET),
                Caller::Container(c.clone()),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(tokio::spawn(async move {
        if servers.is_empty() {
            // No wrapped container: no socket to serve (the files are kept fresh regardless).
            return futures::future::pending().await;
        }
        // Any one stopping is the server stopping.
        let _ = futures::future::select_all(servers).await;
    }))
}

/// The socket's name in a container's socket directory.
pub const CONTAINER_SOCKET: &str = "proxy.sock";

/// Binds `socket` (replacing a stale one) for `caller` and serves until the task is dropped.
pub fn serve_as(
    state: Arc<SocketState>,
    socket: &Path,
    caller: Caller,
) -> Result<tokio::task::JoinHandle<()>> {
    let fail = |e: std::io::Error| {
        Error::Delivery(format!("binding the socket {}: {e}", socket.display()))
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).map_err(fail)?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let cred = stream.peer_cred().ok();
            let uid = cred.map(|c| c.uid());
            let peer_pid = cred.and_then(|c| c.pid());
            if let Some(expected) = state.allowed_uid
                && uid != Some(expected)
            {
                tracing::warn!(peer_uid = ?uid, expected, "socket connection from an unexpected uid refused");
                continue;
            }
            let state = state.clone();
            let caller = caller.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = respond(&state, &req, peer_pid, &caller);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}
