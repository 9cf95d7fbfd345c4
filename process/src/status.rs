//! The plain-HTTP status port: `/metrics`, `/healthz`, `/readyz`. Nothing secret is served on it,
//! so it needs no certificate and the kubelet's probes and Prometheus reach it alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;

use crate::{Error, Result};

/// What `/readyz` answers: `Ok(body)` (200) or the reason it is not ready (503 with that text).
pub type Readiness = dyn Fn() -> Result<String, String> + Send + Sync;

/// What `/metrics` answers: the OpenMetrics text.
pub type MetricsText = dyn Fn() -> String + Send + Sync;

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running status server; dropping it stops serving.
#[derive(Debug)]
pub struct StatusServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// The answer to a GET of `path` on a status port. Binaries that also answer probes on another
/// listener (admission's HTTPS port, where the circuit breaker probes) route them here too, so
/// both ports say the same.
pub fn answer(
    path: &str,
    metrics: impl Fn() -> String,
    readiness: impl Fn() -> Result<String, String>,
) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS, metrics()),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match readiness() {
            Ok(body) => reply(StatusCode::OK, "text/plain", body),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why),
        },
        other => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no endpoint {other}; this port serves /metrics, /healthz and /readyz\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the returned server is dropped.
pub fn serve_status(
    addr: SocketAddr,
    metrics: Arc<MetricsText>,
    readiness: Arc<Readiness>,
) -> Result<StatusServer> {
    let bind_error = |source| Error::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let task = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: keep serving once it passes.
                    tracing::warn!(error = %e, "status port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let response = answer(req.uri().path(), &*metrics, &*readiness);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(StatusServer { addr: bound, task })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.expect("read");
        answer
    }

    #[tokio::test]
    async fn the_status_port_answers_metrics_health_and_readiness() {
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let server = super::serve_status(
            ([127, 0, 0, 1], 0).into(),
            Arc::new(|| "phantom_up 1\n".to_owned()),
            Arc::new(move || {
                if flag.load(Ordering::SeqCst) {
                    Ok("ok\n".to_owned())
                } else {
                    Err("not ready: waiting\n".to_owned())
                }
            }),
        )
        .expect("bind");
        let addr = server.addr;
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics.starts_with("HTTP/1.1 200") && metrics.contains("phantom_up 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let waiting = get(addr, "/readyz").await;
        assert!(
            waiting.starts_with("HTTP/1.1 503") && waiting.ends_with("not ready: waiting\n"),
            "{waiting}"
        );
        ready.store(true, Ordering::SeqCst);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        drop(server);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "a dropped server stops listening"
        );
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = super::serve_status(addr, Arc::new(String::new), Arc::new(|| Ok(String::new())))
            .expect_err("port taken");
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "keeps its source"
        );
    }
}
