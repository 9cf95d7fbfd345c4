//! What every Phantom binary does alike (feature `binary`): it logs to stderr, filtered by
//! `PHANTOM_LOG` (tracing's `EnvFilter` syntax), as text or one JSON object per line
//! (`--log-format`, `PHANTOM_LOG_FORMAT`), it shuts down on SIGTERM or Ctrl-C, and it answers
//! `/metrics`, `/healthz` and `/readyz` on a plain-HTTP status port. Part of the
//! components' common contract, like the labels in [`crate::wellknown`], so operators run all of
//! them the same way.

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    // Plain comments, not doc comments: clap would print them and switch every binary's
    // `--help` to its long layout.
    // Human-readable lines.
    #[default]
    Text,
    // One JSON object per line (for log collectors).
    Json,
}

/// Installs the global subscriber; `default_filter` applies when `PHANTOM_LOG` is unset or
/// invalid.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHANTOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
pub async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What `/readyz` answers: `Ok` (200 `ok`) or the reason it is not ready (503 with that text).
pub type Readiness = dyn Fn() -> Result<(), String> + Send + Sync;

/// What `/metrics` answers: the OpenMetrics text.
pub type MetricsText = dyn Fn() -> String + Send + Sync;

fn reply(
    status: hyper::StatusCode,
    content_type: &'static str,
    body: String,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (plain HTTP: nothing secret is on
/// it); returns the bound address and the serving task.
pub fn serve_status(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<MetricsText>,
    readiness: std::sync::Arc<Readiness>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use hyper::StatusCode;
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let answer = match req.uri().path() {
                            "/metrics" => reply(
                                StatusCode::OK,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                metrics(),
                            ),
                            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                            "/readyz" => match readiness() {
                                Ok(()) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                                Err(why) => {
                                    reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", why)
                                }
                            },
                            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                        };
                        async move { Ok::<_, std::convert::Infallible>(answer) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
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
        let (addr, task) = super::serve_status(
            ([127, 0, 0, 1], 0).into(),
            Arc::new(|| "phantom_up 1\n".to_owned()),
            Arc::new(move || {
                if flag.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("not ready: waiting\n".to_owned())
                }
            }),
        )
        .expect("bind");
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
        task.abort();
    }
}
