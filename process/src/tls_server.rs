//! An HTTPS accept loop for the binaries that serve on TLS (admission, broker): bounded
//! connections (closed before the handshake costs anything), a handshake timeout so idle
//! half-open connections cannot pile up, HTTP/1.1 and HTTP/2, and a graceful stop that lets
//! in-flight requests finish within a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Bound on a TLS handshake.
    pub handshake_timeout: Duration,
    /// How long in-flight requests may take to finish once a stop is asked.
    pub shutdown_grace: Duration,
}

/// Serves `handler` on `listener` over TLS until `stopped` turns true, then waits (bounded by the
/// grace period) for in-flight requests. `on_refused` runs for each connection closed because
/// `max_connections` were open (for the caller's metrics).
pub fn serve_tls<H, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    mut stopped: watch::Receiver<bool>,
    on_refused: impl Fn() + Send + 'static,
    handler: H,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let Ok(connection_slot) = connections.clone().try_acquire_owned() else {
                on_refused();
                tracing::debug!(%peer, max = limits.max_connections, "connection refused: too many open");
                drop(tcp);
                continue;
            };
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let handler = handler.clone();
            tokio::spawn(async move {
                let _slot = connection_slot;
                let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let connection = builder
                    .serve_connection(TokioIo::new(tls), service_fn(handler))
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?limits.shutdown_grace, "in-flight requests did not finish within the grace period");
        }
    })
}
