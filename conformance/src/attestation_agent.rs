//! A test-only CoCo attestation-agent: `GET /aa/evidence?runtime_data=…` answers an SEV-SNP
//! report over `runtime_data` (zero-padded to 64 bytes, as the real agent does) in the agent's
//! JSON shape, signed by the synthetic chip-a VCEK. It listens where a Kata/CoCo pod's agent does
//! (`127.0.0.1:8006`): the node's pods use the host network, so the sidecar of a real pod on the
//! node finds it there. Ships in no image; trusted only by a broker configured with the synthetic
//! chain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::broker::emulated_report;
use crate::{Error, Result};

/// A running agent; dropping it stops it.
#[derive(Debug)]
pub struct AgentEmulator {
    pub addr: SocketAddr,
    debug: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AgentEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AgentEmulator {
    /// Starts an agent on `addr` whose reports have debug off.
    pub async fn start(addr: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(Error::io(format!(
                "binding the attestation-agent emulator to {addr} (is something else there?)"
            )))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("the attestation-agent emulator's address"))?;
        let vcek = crate::broker::synthetic("vcek-a.pk8").map_err(|e| Error::Io {
            context: "the synthetic VCEK".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (debug, served) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let task = {
            let (debug, served) = (debug.clone(), served.clone());
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (debug, served, vcek) = (debug.clone(), served.clone(), vcek.clone());
                    connections.spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let answer = answer(&req, &vcek, debug.load(Ordering::SeqCst));
                            if answer.status() == StatusCode::OK {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                            async move { Ok::<_, Infallible>(answer) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            debug,
            served,
            task,
        })
    }

    /// Whether the reports from now on carry debug in their guest policy.
    pub fn set_debug(&self, on: bool) {
        self.debug.store(on, Ordering::SeqCst);
    }

    /// How many reports it has answered.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

fn answer(req: &Request<Incoming>, vcek: &[u8], debug: bool) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if req.uri().path() != phantom_attestation::aa::EVIDENCE_PATH {
        return reply(StatusCode::NOT_FOUND, "not found".into());
    }
    let runtime_data = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("runtime_data="));
    let Some(runtime_data) = runtime_data else {
        return reply(StatusCode::BAD_REQUEST, "runtime_data is missing".into());
    };
    // The sidecar sends base64url; anything needing percent-decoding is not from it.
    if runtime_data.len() > 64
        || !runtime_data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SNP Attester: Report data must be no more than 64 bytes".into(),
        );
    }
    let mut report_data = [0u8; 64];
    report_data[..runtime_data.len()].copy_from_slice(runtime_data.as_bytes());
    let report = emulated_report(report_data, debug, vcek);
    reply(
        StatusCode::OK,
        phantom_attestation::emulator::attestation_agent_answer(&report, &[]),
    )
}
