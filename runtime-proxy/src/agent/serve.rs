//! The agent's socket: `<socket dir>/agent.sock`, reachable by every daemonset-mode pod on the
//! node (a hostPath). Being able to connect proves nothing; each connection's peer is pinned by
//! the kernel ([`Peer::of`]) and its cgroup read while pinned, and each request must carry its
//! pod's agent-audience token. Only a caller both proofs agree on is answered with its pod's
//! state, by the same socket API as the sidecar's ([`socket::respond`]).
//!
//! `GET /v1/healthz` without a token answers for the agent itself (the init container waits on
//! it); refusals answer 401 (unproven), 403 (proven, not served) or 503 (OpenBao or the API server
//! away), with names only.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use phantom_crds::wellknown::injected::{AGENT_SOCKET_NAME, AGENT_TOKEN_HEADER};
use phantom_identity::peer::Peer;
use phantom_identity::review::review;
use serde_json::json;
use zeroize::Zeroizing;

use super::metrics::CallerOutcome;
use super::{Agent, Unserved, caller};
use crate::socket::{self, Body};
use crate::{Error, Result};

/// Who is at the other end of one connection, as the kernel says.
struct Connection {
    agent: Arc<Agent>,
    /// The peer's PID on the host (rotation notices are sent there).
    pid: i32,
    /// The peer's `/proc/<pid>/cgroup`, read while it was pinned, or why it could not be.
    cgroup: std::result::Result<String, String>,
}

/// The socket's path in `socket_dir`.
pub fn socket_path(socket_dir: &Path) -> PathBuf {
    socket_dir.join(AGENT_SOCKET_NAME)
}

/// Binds the agent's socket (replacing a stale one) and serves until the task is dropped.
pub fn serve(agent: Arc<Agent>) -> Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(&agent.settings.socket_dir);
    let fail = |e: std::io::Error| {
        Error::Delivery(format!(
            "binding the agent socket {}: {e}; is the socket directory a writable hostPath?",
            path.display()
        ))
    };
    std::fs::create_dir_all(&agent.settings.socket_dir).map_err(fail)?;
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(fail)?;
    // Applications run as any uid: the socket is open to all of them, and proven per request.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    }
    tracing::info!(socket = %path.display(), "serving daemonset-mode pods");
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection on the agent socket failed");
                    continue;
                }
            };
            let proc_root = agent.settings.proc_root.clone();
            let (pid, cgroup) = match Peer::of(&stream, &proc_root) {
                Ok(peer) => {
                    let cgroup = peer
                        .read_proc(&proc_root, "cgroup")
                        .map_err(|e| e.to_string());
                    (peer.pid, cgroup)
                }
                Err(e) => (0, Err(e.to_string())),
            };
            let connection = Arc::new(Connection {
                agent: agent.clone(),
                pid,
                cgroup,
            });
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let connection = connection.clone();
                    async move { Ok::<_, Infallible>(connection.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }))
}

impl Connection {
    #[tracing::instrument(name = "agent_request", skip_all, fields(path = %req.uri().path(), peer_pid = self.pid))]
    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let metrics = &self.agent.metrics;
        let token = req
            .headers()
            .get(AGENT_TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|t| Zeroizing::new(t.trim().to_owned()));
        let Some(token) = token else {
            if req.uri().path() == "/v1/healthz" {
                return socket::answer(StatusCode::OK, json!({"status": "ok", "agent": true}));
            }
            metrics.caller(CallerOutcome::Unproven);
            return socket::error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "no {AGENT_TOKEN_HEADER} header: a caller of the node agent proves its pod with its projected token of the agent's audience"
                ),
            );
        };
        match self.prove(&token).await {
            Ok((state, container)) => {
                metrics.caller(CallerOutcome::Served);
                metrics
                    .pods
                    .set(i64::try_from(self.agent.pods_served().await).unwrap_or(i64::MAX));
                socket::respond(
                    &state,
                    &req,
                    Some(self.pid),
                    &socket::Caller::Container(container),
                )
            }
            Err(Unserved { outcome, message }) => {
                metrics.caller(outcome);
                tracing::warn!(outcome = outcome.as_str(), reason = %message, "caller refused");
                let status = match outcome {
                    CallerOutcome::Unproven => StatusCode::UNAUTHORIZED,
                    CallerOutcome::Failed => StatusCode::SERVICE_UNAVAILABLE,
                    CallerOutcome::NotInPod | CallerOutcome::Refused | CallerOutcome::Served => {
                        StatusCode::FORBIDDEN
                    }
                };
                socket::error(status, message)
            }
        }
    }

    /// Both proofs, then the pod's state: the kernel's (the peer's cgroup names a container of a
    /// pod on this node) and the pod's (the token, reviewed, names that pod).
    async fn prove(
        &self,
        token: &str,
    ) -> std::result::Result<(Arc<socket::SocketState>, String), Unserved> {
        let refused = Unserved::new;
        let cgroup = self.cgroup.as_ref().map_err(|why| {
            refused(
                CallerOutcome::NotInPod,
                format!("the node agent cannot tell which process is calling: {why}"),
            )
        })?;
        let reviewed = review(&self.agent.kube, token, &self.agent.settings.audience)
            .await
            .map_err(|e| match e {
                phantom_identity::Error::Identity(why) => refused(
                    CallerOutcome::Unproven,
                    format!("the token proves no pod: {why}"),
                ),
                other => refused(CallerOutcome::Failed, other.to_string()),
            })?;
        let (pod, container) = self
            .agent
            .process_pod(cgroup)
            .await
            .map_err(|r| refused(CallerOutcome::NotInPod, r.to_string()))?;
        let namespace = self.agent.namespace(&reviewed.pod.namespace).await?;
        let caller = caller::identify(
            &pod,
            &container,
            &reviewed,
            namespace.as_ref(),
            &self.agent.settings.selection,
        )
        .map_err(|r| {
            let outcome = match r {
                caller::Refusal::OtherPod { .. } => CallerOutcome::Unproven,
                _ => CallerOutcome::Refused,
            };
            refused(outcome, r.to_string())
        })?;
        let state = self.agent.serve(&pod, &caller).await?;
        Ok((state, caller.container))
    }
}
