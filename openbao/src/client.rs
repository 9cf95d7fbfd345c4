//! The client: Kubernetes auth with a projected ServiceAccount token, token renewal and
//! revocation, KV v2 and dynamic reads with leases, health and role lookups. Answers are parsed
//! from zeroizing buffers and the secret data moves straight into [`SecretValue`]s; error
//! messages carry OpenBao's `errors` array only, never a body that could hold data.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::coalesce::Coalescer;
use crate::observe::{Observer, Operation, RequestOutcome};
use crate::secret::{SecretValue, values_of, wipe, wiping_header, wiping_json};
use crate::tls::TlsSettings;
use crate::{Error, Result, Source};

/// The TLS error somewhere along `error`'s source chain, if the failure was TLS. rustls reports
/// through hyper as `io::Error`s wrapping a `rustls::Error`, and `io::Error::source` skips the
/// error it wraps, so the walk steps into wrapped errors itself.
pub(crate) fn tls_failure<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(link) = next {
        if let Some(tls) = link.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match link
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => link.source(),
        };
    }
    None
}

/// The operation a request is, for the observer.
fn operation_of(path: &str) -> Operation {
    match path {
        "auth/token/renew-self" | "sys/leases/renew" => Operation::Renew,
        "auth/token/revoke-self" => Operation::Revoke,
        _ if path.starts_with("auth/") && path.ends_with("/login") => Operation::Login,
        _ => Operation::Read,
    }
}

/// `lease_duration` and `renewable` of an answer (or of its `auth` part).
fn lease_terms(answer: &Value) -> (Duration, bool) {
    (
        Duration::from_secs(
            answer
                .get("lease_duration")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        answer
            .get("renewable")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
}

/// What `sys/health` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Health {
    pub initialized: bool,
    pub sealed: bool,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub version: String,
}

/// A logged-in session: the client token and how long it lives.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: SecretValue,
    pub lease_duration: Duration,
    pub renewable: bool,
    /// When OpenBao granted (or last renewed) the lease.
    pub granted_at: Instant,
    /// The OpenBao namespace the token belongs to (`X-Vault-Namespace` on every request).
    pub namespace: Option<String>,
}

impl Session {
    /// A process-local fingerprint of the token (never printed: it identifies, not reveals).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.token.expose().hash(&mut h);
        h.finish()
    }

    /// Whether two thirds of the lease have passed: time to renew (or log in again) while the
    /// token still works, leaving room for a retry.
    pub fn wants_renewal(&self) -> bool {
        !self.lease_duration.is_zero() && self.granted_at.elapsed() >= self.lease_duration * 2 / 3
    }
}

/// One version of a KV v2 secret.
#[derive(Debug, Clone)]
pub struct KvSecret {
    pub data: BTreeMap<String, SecretValue>,
    pub version: u64,
}

/// A dynamic secret (database credentials and the like): fresh values per read, valid while
/// their lease lives.
#[derive(Debug, Clone)]
pub struct DynamicSecret {
    pub data: BTreeMap<String, SecretValue>,
    pub lease: Lease,
}

/// A lease on a dynamic secret. It dies with the token that created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub duration: Duration,
    pub renewable: bool,
    pub granted_at: Instant,
    /// Fingerprint of the token that read it (a new login means new credentials are needed).
    pub token: u64,
}

impl Lease {
    /// Two thirds of the lease have passed.
    pub fn wants_renewal(&self) -> bool {
        self.granted_at.elapsed() >= self.duration * 2 / 3
    }
}

/// (caller identity, mount, path, version) of a read.
type ReadKey = (String, String, String, Option<u64>);

/// Talks to one OpenBao server.
#[derive(Debug, Clone)]
pub struct OpenBaoClient {
    addr: String,
    http: reqwest::Client,
    reads: Arc<Coalescer<ReadKey, KvSecret>>,
    observer: Option<Arc<dyn Observer>>,
}

impl OpenBaoClient {
    /// A client for `addr` with default TLS settings (the system CA bundle for `https://`).
    pub fn new(addr: impl Into<String>) -> Result<Self> {
        Self::with_tls(addr, &TlsSettings::default())
    }

    /// A client for `addr` (`https://host:8200`) trusting OpenBao as `tls` says, with a
    /// connection pool that is reused across requests.
    pub fn with_tls(addr: impl Into<String>, tls: &TlsSettings) -> Result<Self> {
        let addr = addr.into().trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90));
        if addr.starts_with("https://") {
            let config = crate::tls::client_config(tls).map_err(|e| match e {
                Error::Tls { cause, source, .. } => Error::Tls {
                    addr: addr.clone(),
                    cause,
                    source,
                },
                other => other,
            })?;
            builder = builder.use_preconfigured_tls(config);
        } else if *tls != TlsSettings::default() {
            return Err(Error::Tls {
                addr,
                cause: "TLS settings are given but the address is plain http://; use https://"
                    .into(),
                source: None,
            });
        }
        let http = builder.build().map_err(|e| Error::Unreachable {
            addr: addr.clone(),
            cause: format!("building the HTTP client: {e}"),
            source: Some(Arc::new(e)),
        })?;
        Ok(Self {
            addr,
            http,
            reads: Arc::default(),
            observer: None,
        })
    }

    /// Reports every request to `observer` (coalesced reads once).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        namespace: Option<&str>,
        token: Option<&SecretValue>,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(namespace) = namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(token) = token {
            let value = wiping_header(token).ok_or_else(|| Error::Malformed {
                addr: self.addr.clone(),
                path: path.to_owned(),
                what: "the session token is not a valid header value".into(),
                source: None,
            })?;
            request = request.header("X-Vault-Token", value);
        }
        // Bodies carry the ServiceAccount token (login) or secret data (writes): wiped buffers.
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(wiping_json(body));
        }
        let unreachable = |e: reqwest::Error| {
            // reqwest's own message is "error sending request"; the cause is in the chain.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                cause.push_str(": ");
                cause.push_str(&inner.to_string());
                source = inner.source();
            }
            let cause = cause.replace(&format!(" for url ({}/", self.addr), " (");
            let is_tls = tls_failure(&e).is_some();
            let source: Option<Source> = Some(Arc::new(e));
            if is_tls {
                Error::Tls {
                    addr: self.addr.clone(),
                    cause,
                    source,
                }
            } else {
                Error::Unreachable {
                    addr: self.addr.clone(),
                    cause,
                    source,
                }
            }
        };
        let observe = |status: Option<u16>| {
            if let Some(observer) = &self.observer {
                let path = path.split('?').next().unwrap_or(path);
                observer.request(operation_of(path), RequestOutcome::of_status(status));
            }
        };
        let response = request.send().await.map_err(|e| {
            observe(None);
            unreachable(e)
        })?;
        let status = response.status().as_u16();
        observe(Some(status));
        let bytes = Zeroizing::new(Vec::<u8>::from(
            response.bytes().await.map_err(unreachable)?,
        ));
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
                addr: self.addr.clone(),
                path: path.to_owned(),
                what: format!("not JSON: {e}"),
                source: Some(Arc::new(e)),
            })?
        };
        Ok((status, value))
    }

    /// [`call`](Self::call) as `session`: its token, in its OpenBao namespace.
    async fn call_as(
        &self,
        session: &Session,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.call(
            method,
            path,
            session.namespace.as_deref(),
            Some(&session.token),
            body,
        )
        .await
    }

    fn errors_of(value: &Value) -> String {
        value
            .get("errors")
            .map(Value::to_string)
            .unwrap_or_else(|| "no errors given".into())
    }

    /// Logs in with Kubernetes auth at `auth/<mount>` as `role` with the ServiceAccount token in
    /// `token_path` (re-read on every login: the kubelet rotates it).
    pub async fn login_kubernetes(
        &self,
        mount: &str,
        role: &str,
        token_path: &Path,
    ) -> Result<Session> {
        self.login_kubernetes_in(None, mount, role, token_path)
            .await
    }

    /// [`login_kubernetes`](Self::login_kubernetes) inside an OpenBao namespace (the auth mount
    /// lives there; the session's reads and renewals then carry the same namespace).
    pub async fn login_kubernetes_in(
        &self,
        namespace: Option<&str>,
        mount: &str,
        role: &str,
        token_path: &Path,
    ) -> Result<Session> {
        let jwt =
            Zeroizing::new(
                std::fs::read_to_string(token_path).map_err(|e| Error::Token {
                    path: token_path.display().to_string(),
                    source: Arc::new(e),
                })?,
            );
        let path = format!("auth/{mount}/login");
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                &path,
                namespace,
                None,
                Some(json!({"role": role, "jwt": jwt.trim()})),
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(Error::LoginRefused {
                addr: self.addr.clone(),
                role: role.to_owned(),
                mount: mount.to_owned(),
                status,
                errors: Self::errors_of(&answer),
            });
        }
        let mut session = self.session_from(&path, answer)?;
        session.namespace = namespace.map(str::to_owned);
        Ok(session)
    }

    /// The session in a login or renewal answer (`auth.client_token`, lease, renewable); the
    /// answer is wiped.
    fn session_from(&self, path: &str, mut answer: Value) -> Result<Session> {
        let mut auth = answer
            .get_mut("auth")
            .map(Value::take)
            .unwrap_or(Value::Null);
        wipe(&mut answer);
        let token = auth
            .get("client_token")
            .and_then(Value::as_str)
            .map(|t| SecretValue::new(t.to_owned()))
            .ok_or_else(|| Error::Malformed {
                addr: self.addr.clone(),
                path: path.to_owned(),
                what: "no auth.client_token".into(),
                source: None,
            });
        let (lease_duration, renewable) = lease_terms(&auth);
        let session = token.map(|token| Session {
            token,
            lease_duration,
            renewable,
            granted_at: Instant::now(),
            namespace: None,
        });
        wipe(&mut auth);
        session
    }

    /// Extends the session's token (`auth/token/renew-self`). OpenBao caps the lease at the
    /// role's `token_max_ttl`; the caller logs in again when the renewed lease is too short.
    pub async fn renew_self(&self, session: &Session) -> Result<Session> {
        let path = "auth/token/renew-self";
        let (status, answer) = self
            .call_as(session, reqwest::Method::POST, path, Some(json!({})))
            .await?;
        if !(200..300).contains(&status) {
            let errors = Self::errors_of(&answer);
            let mut answer = answer;
            wipe(&mut answer);
            return Err(Error::Read {
                addr: self.addr.clone(),
                path: path.into(),
                status,
                errors,
                hint: "the token expired or was revoked; phantom-proxy logs in again",
            });
        }
        let mut renewed = self.session_from(path, answer)?;
        renewed.namespace = session.namespace.clone();
        Ok(renewed)
    }

    /// Reads a KV v2 secret (`version` pins one; `None` is the latest).
    pub async fn read_kv(
        &self,
        session: &Session,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<KvSecret> {
        let api_path = match version {
            Some(v) => format!("{mount}/data/{path}?version={v}"),
            None => format!("{mount}/data/{path}"),
        };
        let (status, mut answer) = self
            .call_as(session, reqwest::Method::GET, &api_path, None)
            .await?;
        if !(200..300).contains(&status) {
            let hint = match status {
                403 => {
                    "the pod's OpenBao policy does not allow reading this path: grant read on it to the role's policies"
                }
                404 => {
                    "no such secret: check mount and path in the SecretBinding (no `data/` prefix)"
                }
                503 => "OpenBao is sealed or in standby",
                _ => "see OpenBao's server log",
            };
            let errors = Self::errors_of(&answer);
            wipe(&mut answer);
            return Err(Error::Read {
                addr: self.addr.clone(),
                path: format!("{mount}/{path}"),
                status,
                errors,
                hint,
            });
        }
        let version = answer
            .pointer("/data/metadata/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data = match answer.pointer_mut("/data/data").map(Value::take) {
            Some(Value::Object(map)) => values_of(map),
            _ => {
                wipe(&mut answer);
                return Err(Error::Malformed {
                    addr: self.addr.clone(),
                    path: format!("{mount}/{path}"),
                    what: "no data.data object (is this a KV v2 mount?)".into(),
                    source: None,
                });
            }
        };
        wipe(&mut answer);
        Ok(KvSecret { data, version })
    }

    /// Reads a dynamic secret (`GET <mount>/<path>`, e.g. `database/creds/app`): new values with
    /// a lease.
    pub async fn read_dynamic(
        &self,
        session: &Session,
        mount: &str,
        path: &str,
    ) -> Result<DynamicSecret> {
        let api_path = format!("{mount}/{path}");
        let (status, mut answer) = self
            .call_as(session, reqwest::Method::GET, &api_path, None)
            .await?;
        if !(200..300).contains(&status) {
            let errors = Self::errors_of(&answer);
            wipe(&mut answer);
            return Err(Error::Read {
                addr: self.addr.clone(),
                path: api_path,
                status,
                errors,
                hint: match status {
                    403 => {
                        "the pod's OpenBao policy does not allow reading this path: grant read on it to the role's policies"
                    }
                    404 => "no such role or engine: check mount and path in the SecretBinding",
                    _ => "see OpenBao's server log",
                },
            });
        }
        let (duration, renewable) = lease_terms(&answer);
        let lease = Lease {
            id: answer
                .get("lease_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            duration,
            renewable,
            granted_at: Instant::now(),
            token: session.fingerprint(),
        };
        let data = match answer.get_mut("data").map(Value::take) {
            Some(Value::Object(map)) if !lease.id.is_empty() => values_of(map),
            Some(mut other) => {
                wipe(&mut other);
                wipe(&mut answer);
                return Err(Error::Malformed {
                    addr: self.addr.clone(),
                    path: api_path,
                    what: "no lease_id or no data object (is this a dynamic engine? KV v2 secrets use engine kv-v2)".into(),
                                    source: None,
                });
            }
            None => {
                wipe(&mut answer);
                return Err(Error::Malformed {
                    addr: self.addr.clone(),
                    path: api_path,
                    what: "no data object".into(),
                    source: None,
                });
            }
        };
        wipe(&mut answer);
        Ok(DynamicSecret { data, lease })
    }

    /// Extends `lease` (`sys/leases/renew`); the new lease may be shorter than asked when the
    /// engine's `max_ttl` nears.
    pub async fn renew_lease(&self, session: &Session, lease: &Lease) -> Result<Lease> {
        let path = "sys/leases/renew";
        let (status, answer) = self
            .call_as(
                session,
                reqwest::Method::PUT,
                path,
                Some(json!({"lease_id": lease.id, "increment": lease.duration.as_secs()})),
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(Error::Read {
                addr: self.addr.clone(),
                path: path.into(),
                status,
                errors: Self::errors_of(&answer),
                hint: "the lease cannot be renewed; phantom-proxy reads new credentials",
            });
        }
        let (duration, renewable) = lease_terms(&answer);
        Ok(Lease {
            duration,
            renewable,
            granted_at: Instant::now(),
            ..lease.clone()
        })
    }

    /// OpenBao's `sys/health` (answered whatever the state: sealed and uninitialized servers are
    /// reported, not turned into errors).
    pub async fn health(&self, namespace: Option<&str>) -> Result<Health> {
        let path = "sys/health?standbyok=true&perfstandbyok=true&sealedcode=200&uninitcode=200";
        let (status, answer) = self
            .call(reqwest::Method::GET, path, namespace, None, None)
            .await?;
        if !(200..300).contains(&status) {
            return Err(Error::Read {
                addr: self.addr.clone(),
                path: "sys/health".into(),
                status,
                errors: Self::errors_of(&answer),
                hint: "is this address OpenBao (or Vault)?",
            });
        }
        serde_json::from_value(answer).map_err(|e| Error::Malformed {
            addr: self.addr.clone(),
            path: "sys/health".into(),
            what: e.to_string(),
            source: None,
        })
    }

    /// Whether the Kubernetes auth role `auth/<mount>/role/<role>` exists, read as `session`
    /// (an operator token: roles are not readable with a pod's own login).
    pub async fn role_exists(&self, session: &Session, mount: &str, role: &str) -> Result<bool> {
        let path = format!("auth/{mount}/role/{role}");
        let (status, answer) = self
            .call_as(session, reqwest::Method::GET, &path, None)
            .await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(Error::Read {
                addr: self.addr.clone(),
                path,
                status,
                errors: Self::errors_of(&answer),
                hint: "the token needs read on the auth mount's roles",
            }),
        }
    }

    /// Revokes the session's token (`auth/token/revoke-self`), and with it every lease it
    /// created: dynamic credentials stop working when the pod goes away.
    pub async fn revoke_self(&self, session: &Session) -> Result<()> {
        let path = "auth/token/revoke-self";
        let (status, answer) = self
            .call_as(session, reqwest::Method::POST, path, Some(json!({})))
            .await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Error::Read {
                addr: self.addr.clone(),
                path: path.into(),
                status,
                errors: Self::errors_of(&answer),
                hint: "the token may have expired already (its leases with it)",
            })
        }
    }

    /// [`read_kv`](Self::read_kv), with concurrent reads of the same (token, mount, path,
    /// version) sharing one request to OpenBao.
    pub async fn read_kv_coalesced(
        &self,
        session: &Session,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<Arc<KvSecret>> {
        // The token identifies the caller: two pods never share a read.
        let identity = format!("{:016x}", session.fingerprint());
        let key = (identity, mount.to_owned(), path.to_owned(), version);
        let (client, session, mount, path) = (
            self.clone(),
            session.clone(),
            mount.to_owned(),
            path.to_owned(),
        );
        self.reads
            .run(key, async move {
                client.read_kv(&session, &mount, &path, version).await
            })
            .await
    }
}
