//! HTTPS for AdmissionReviews (`POST /mutate`, `POST /validate`) and plain HTTP on a separate
//! port for `/healthz`, `/readyz` and `/metrics`, so probes and scrapes never need the serving
//! certificate. Shutdown stops accepting and lets in-flight reviews finish within a grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::budget::Budget;
use crate::metrics::Shed;
use crate::review::{Admitter, Reply};
use crate::tls::ReloadingCertificate;
use crate::{Error, Result};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTPS address of the webhook.
    pub listen: SocketAddr,
    /// Plain HTTP address of health and metrics.
    pub health_listen: SocketAddr,
    /// Largest accepted request body; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// How long in-flight requests may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Bound on a TLS handshake, so idle half-open connections cannot pile up.
    pub handshake_timeout: Duration,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Memory requests in flight may hold ([`crate::budget`]); beyond it they are answered 503.
    pub max_inflight_bytes: usize,
    /// Bound on receiving one request body (a slowly trickled body holds its charge).
    pub body_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_inflight_bytes: 128 * 1024 * 1024,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// The bound HTTPS address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound health address.
    pub health_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The plain-HTTP status port; stops with the server.
    _status: phantom_process::StatusServer,
}

impl Running {
    /// Stops accepting, waits for in-flight requests (bounded by the grace period), returns.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Resolves when a shutdown was requested elsewhere (never, unless [`Running::shutdown`] runs).
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

fn reply(r: Reply) -> Response<Full<Bytes>> {
    full(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        r.body,
    )
}

/// What every request on the webhook port is checked against.
#[derive(Debug, Clone)]
struct Limits {
    max_body: usize,
    budget: Budget,
    body_timeout: Duration,
}

fn overloaded(message: String) -> Response<Full<Bytes>> {
    let mut response = reply(Reply::error(503, &message));
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

async fn webhook(
    admitter: Arc<Admitter>,
    limits: Limits,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let max_body = limits.max_body;
    let path = req.uri().path().to_owned();
    // The controller's circuit breaker probes readiness where the API server calls: through the
    // Service, over TLS with the caBundle, so a broken certificate or route counts as down.
    if req.method() == Method::GET && matches!(path.as_str(), "/healthz" | "/readyz") {
        return Ok(health(&admitter, &req));
    }
    if !matches!(path.as_str(), "/mutate" | "/validate") {
        return Ok(reply(Reply::error(
            404,
            &format!(
                "no endpoint {path}; use POST /mutate or POST /validate (GET /readyz for probes)"
            ),
        )));
    }
    if req.method() != Method::POST {
        return Ok(reply(Reply::error(405, &format!("{path} takes POST"))));
    }
    // Charged before a byte is read: declared too large is refused, and no declared length is
    // charged as the largest body.
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return Ok(reply(Reply::error(
            413,
            &format!("the request body exceeds {max_body} bytes"),
        )));
    }
    let Some(mut charge) = limits.budget.try_take(declared.unwrap_or(max_body)) else {
        admitter.metrics.shed(Shed::Memory);
        return Ok(overloaded(
            "phantom-admission is at its memory budget for requests in flight (--max-inflight-bytes); retry in a moment"
                .into(),
        ));
    };
    let read = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(req.into_body(), max_body).collect(),
    );
    let Ok(collected) = read.await else {
        admitter.metrics.shed(Shed::SlowBody);
        return Ok(reply(Reply::error(
            408,
            &format!(
                "the request body did not arrive within {:?}",
                limits.body_timeout
            ),
        )));
    };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(reply(Reply::error(
                413,
                &format!("the request body exceeds {max_body} bytes"),
            )));
        }
        Err(e) => {
            return Ok(reply(Reply::error(
                400,
                &format!("reading the body failed: {e}"),
            )));
        }
    };
    match crate::budget::tree_charge(&body) {
        Err(too) => {
            return Ok(reply(Reply::error(
                413,
                &format!(
                    "the request holds {} JSON values, more than the {} any pod needs",
                    too.values,
                    crate::budget::MAX_JSON_VALUES
                ),
            )));
        }
        Ok(tree) => {
            if limits.budget.try_add(&mut charge, tree).is_none() {
                admitter.metrics.shed(Shed::Memory);
                return Ok(overloaded(
                    "phantom-admission is at its memory budget for requests in flight (--max-inflight-bytes); retry in a moment"
                        .into(),
                ));
            }
        }
    }
    let answer = if path == "/mutate" {
        admitter.mutate(&body).await
    } else {
        admitter.validate(&body).await
    };
    Ok(reply(answer))
}

/// What `/readyz` says: ready once the watches on Phantom's resources have synced.
fn readiness(admitter: &Admitter) -> Result<String, String> {
    let snapshot = admitter.store.snapshot();
    if snapshot.synced {
        Ok(format!(
            "ready: policy set {} (generation {})\n",
            snapshot.set.digest(),
            snapshot.generation
        ))
    } else {
        Err("not ready: the watches on Phantom's resources have not synced (are the CRDs installed?)\n".into())
    }
}

fn health(admitter: &Admitter, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    phantom_process::status::answer(
        req.uri().path(),
        || admitter.metrics.encode(),
        || readiness(admitter),
    )
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Binds both listeners and serves until [`Running::shutdown`].
pub async fn start(
    admitter: Arc<Admitter>,
    certificate: Arc<ReloadingCertificate>,
    options: ServerOptions,
) -> Result<Running> {
    let webhook_listener = bind(options.listen).await?;
    let addr = webhook_listener
        .local_addr()
        .map_err(|source| Error::Bind {
            addr: options.listen.to_string(),
            source,
        })?;
    let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
    let (stop, stopped) = watch::channel(false);

    let serve = {
        let limits = Limits {
            max_body: options.max_body_bytes,
            budget: Budget::new(options.max_inflight_bytes),
            body_timeout: options.body_timeout,
        };
        let (shedding, handling) = (admitter.clone(), admitter.clone());
        phantom_process::tls_server::serve_tls(
            webhook_listener,
            acceptor,
            phantom_process::tls_server::ConnectionLimits {
                max_connections: options.max_connections,
                handshake_timeout: options.handshake_timeout,
                shutdown_grace: options.shutdown_grace,
            },
            stopped,
            move || shedding.metrics.shed(Shed::Connections),
            move |req| webhook(handling.clone(), limits.clone(), req),
        )
    };

    let status = {
        let (metrics, ready) = (admitter.clone(), admitter.clone());
        phantom_process::serve_status(
            options.health_listen,
            Arc::new(move || metrics.metrics.encode()),
            Arc::new(move || readiness(&ready)),
        )?
    };
    let health_addr = status.addr;

    tracing::info!(%addr, %health_addr, "phantom-admission serving");
    Ok(Running {
        addr,
        health_addr,
        stop,
        tasks: vec![serve],
        _status: status,
    })
}
