//! HTTPS for the protocol (`POST /v1/challenge`, `POST /v1/release`) and plain HTTP on a separate
//! port for `/healthz`, `/readyz` and `/metrics`. The serving key is what sidecars pin, so it is
//! loaded once: rotating it means publishing the new pin first (as with OpenBao's).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use phantom_attestation::protocol::{CHALLENGE_PATH, RELEASE_PATH, Refused};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Check;
use crate::release::{Answer, Broker};
use crate::{Error, Result};

/// Where and how to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    /// Largest accepted request body (evidence is a few KiB).
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub limits: phantom_process::tls_server::ConnectionLimits,
}

/// The TLS configuration of the serving pair (PEM files).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig> {
    let tls = |what, path: &Path, reason: String| Error::Tls {
        what,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls("certificate", cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("key", key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls("certificate", cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| tls("key", key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn answer(a: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(a.body)));
    *response.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn refused(status: u16, message: String) -> Response<Full<Bytes>> {
    answer(Answer {
        status,
        body: serde_json::to_vec(&Refused {
            kind: Check::Request.as_str().into(),
            message,
        })
        .expect("serializes"),
    })
}

async fn handle(
    broker: Arc<Broker>,
    options: Arc<ServerOptions>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::POST {
        return Ok(refused(
            405,
            format!("{path} takes POST ({CHALLENGE_PATH}, {RELEASE_PATH})"),
        ));
    }
    if path == CHALLENGE_PATH {
        return Ok(answer(broker.challenge()));
    }
    if path != RELEASE_PATH {
        return Ok(refused(
            404,
            format!("no endpoint {path}; use POST {CHALLENGE_PATH} or POST {RELEASE_PATH}"),
        ));
    }
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| zeroize::Zeroizing::new(t.trim().to_owned()));
    let max = options.max_body_bytes;
    let body = match tokio::time::timeout(
        options.body_timeout,
        Limited::new(req.into_body(), max).collect(),
    )
    .await
    {
        Err(_) => {
            return Ok(refused(
                408,
                format!("the body did not arrive within {:?}", options.body_timeout),
            ));
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(refused(
                413,
                format!("the body exceeds {max} bytes; evidence is a few KiB"),
            ));
        }
        Ok(Err(e)) => return Ok(refused(400, format!("reading the body failed: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(answer(
        broker
            .release(bearer.as_deref().map(String::as_str), &body)
            .await,
    ))
}

/// A running broker server.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    stop: watch::Sender<bool>,
    serve: tokio::task::JoinHandle<()>,
    _status: phantom_process::StatusServer,
}

impl Running {
    /// Stops accepting and waits for in-flight releases (bounded by the grace period).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.serve.await;
    }
}

/// Binds both listeners and serves until [`Running::shutdown`].
pub async fn start(
    broker: Arc<Broker>,
    tls: rustls::ServerConfig,
    options: ServerOptions,
    readiness: Arc<phantom_process::Readiness>,
) -> Result<Running> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: options.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: options.listen.to_string(),
        source,
    })?;
    let (stop, stopped) = watch::channel(false);
    let status = {
        let broker = broker.clone();
        phantom_process::serve_status(
            options.health_listen,
            Arc::new(move || broker.metrics.encode()),
            readiness,
        )?
    };
    let limits = options.limits;
    let options = Arc::new(options);
    let serve = phantom_process::tls_server::serve_tls(
        listener,
        TlsAcceptor::from(Arc::new(tls)),
        limits,
        stopped,
        || {},
        move |req| handle(broker.clone(), options.clone(), req),
    );
    let health_addr = status.addr;
    tracing::info!(%addr, %health_addr, "phantom-broker serving");
    Ok(Running {
        addr,
        health_addr,
        stop,
        serve,
        _status: status,
    })
}
