//! A counting HTTP proxy in front of OpenBao: forwards every request unchanged and counts them by
//! method and path, so tests can tell how often OpenBao was really asked (OpenBao 2.x only takes
//! audit devices from its config file, and a component's own counter would prove nothing).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::{Error, Result};

/// A running proxy; dropping it stops accepting.
#[derive(Debug)]
pub struct CountingProxy {
    pub addr: SocketAddr,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Result<Self> {
        Self::start_on(upstream, ([127, 0, 0, 1], 0).into()).await
    }

    /// Starts a proxy on `addr` (to bring one back on the port a client already uses: stopping
    /// and restarting it is how tests make OpenBao unreachable and reachable again).
    pub async fn start_on(upstream: &str, addr: SocketAddr) -> Result<Self> {
        Self::start_with_latency(upstream, addr, std::time::Duration::ZERO).await
    }

    /// Starts a proxy on `addr` that holds every answer for `latency`, like an OpenBao across a
    /// WAN: concurrent callers then really overlap, whatever the scheduler does.
    pub async fn start_with_latency(
        upstream: &str,
        addr: SocketAddr,
        latency: std::time::Duration,
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(Error::io("binding the counting proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("binding the counting proxy"))?;
        let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let task = {
            let counts = counts.clone();
            tokio::spawn(async move {
                // Connections live in this set: stopping the proxy cuts open keep-alive
                // connections too, as OpenBao going away would.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (counts, upstream, http) = (counts.clone(), upstream.clone(), http.clone());
                    connections.spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let (counts, upstream, http) =
                                (counts.clone(), upstream.clone(), http.clone());
                            async move {
                                let answer = forward(req, &upstream, &http, &counts).await;
                                tokio::time::sleep(latency).await;
                                Ok::<_, Infallible>(answer)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self { addr, counts, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests `METHOD /path?query` were forwarded.
    pub fn count(&self, method: &str, path_and_query: &str) -> usize {
        let key = format!("{method} {path_and_query}");
        self.counts
            .lock()
            .map(|c| c.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// How many requests whose `METHOD /path?query` satisfies `matches` were forwarded.
    pub fn count_where(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.counts
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(key, _)| !key.starts_with("status ") && matches(key))
                    .map(|(_, n)| n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// How many answers had HTTP status `code`.
    pub fn status_count(&self, code: u16) -> usize {
        self.counts
            .lock()
            .map(|c| c.get(&format!("status {code}")).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: &str,
    http: &reqwest::Client,
    counts: &Mutex<BTreeMap<String, usize>>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Ok(mut c) = counts.lock() {
        *c.entry(format!("{} {target}", parts.method)).or_default() += 1;
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = http.request(parts.method.clone(), format!("{upstream}{target}"));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST {
            out = out.header(name, value);
        }
    }
    let (status, bytes) = match out.body(body).send().await {
        Ok(resp) => (resp.status(), resp.bytes().await.unwrap_or_default()),
        Err(e) => (
            hyper::StatusCode::BAD_GATEWAY,
            Bytes::from(format!("counting proxy: {e}")),
        ),
    };
    if let Ok(mut c) = counts.lock() {
        *c.entry(format!("status {}", status.as_u16())).or_default() += 1;
    }
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response
}
