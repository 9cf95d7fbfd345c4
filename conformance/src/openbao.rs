//! A small admin client for the environment's OpenBao: what a platform team does with `bao` when
//! it sets Phantom up (Kubernetes auth, policies, roles, KV secrets), over the HTTP API.

use serde_json::{Value, json};

use crate::{Error, Result};

/// The environment's OpenBao server.
#[derive(Debug, Clone)]
pub struct OpenBao {
    addr: String,
    root_token: String,
    http: reqwest::Client,
    /// OpenBao namespace every call is made in (`X-Vault-Namespace`).
    namespace: Option<String>,
}

/// A role of OpenBao's Kubernetes auth method: which ServiceAccounts may log in, with which policies.
#[derive(Debug, Clone)]
pub struct KubernetesRole {
    pub name: String,
    pub service_account_names: Vec<String>,
    pub service_account_namespaces: Vec<String>,
    pub policies: Vec<String>,
    /// Required `aud` of the presented token; Phantom mints tokens for audience `openbao`.
    pub audience: Option<String>,
    pub token_ttl: String,
    /// Cap on renewals (`token_max_ttl`); OpenBao's system maximum when `None`.
    pub token_max_ttl: Option<String>,
}

impl KubernetesRole {
    /// A role for one ServiceAccount of one namespace, with the given policies and audience `openbao`.
    pub fn for_service_account(
        name: &str,
        namespace: &str,
        service_account: &str,
        policies: &[&str],
    ) -> Self {
        Self {
            name: name.to_owned(),
            service_account_names: vec![service_account.to_owned()],
            service_account_namespaces: vec![namespace.to_owned()],
            policies: policies.iter().map(|p| p.to_string()).collect(),
            audience: Some("openbao".to_owned()),
            token_ttl: "15m".to_owned(),
            token_max_ttl: None,
        }
    }
}

impl OpenBao {
    pub fn new(addr: impl Into<String>, root_token: impl Into<String>) -> Self {
        Self::with_client(addr, root_token, reqwest::Client::new())
    }

    /// A client for a server reached with its own HTTP client (TLS roots, client certificate).
    pub fn with_client(
        addr: impl Into<String>,
        root_token: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            addr: addr.into(),
            root_token: root_token.into(),
            http,
            namespace: None,
        }
    }

    /// Creates the OpenBao namespace `name` (under this client's namespace) and returns a
    /// client working inside it.
    pub async fn create_namespace(&self, name: &str) -> Result<Self> {
        self.admin(
            reqwest::Method::POST,
            &format!("sys/namespaces/{name}"),
            json!({}),
        )
        .await?;
        Ok(Self {
            namespace: Some(match &self.namespace {
                Some(parent) => format!("{parent}/{name}"),
                None => name.to_owned(),
            }),
            ..self.clone()
        })
    }

    /// Initialises a fresh non-dev server with one unseal key, unseals it and keeps the root
    /// token (test environments only: a real deployment splits and guards the keys).
    pub async fn init_and_unseal(&mut self) -> Result<()> {
        let init = self
            .call(
                reqwest::Method::PUT,
                "sys/init",
                None,
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?
            .unwrap_or_default();
        let key = init
            .pointer("/keys_base64/0")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.root_token = init
            .get("root_token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let unsealed = self
            .call(
                reqwest::Method::PUT,
                "sys/unseal",
                None,
                Some(json!({ "key": key })),
            )
            .await?
            .unwrap_or_default();
        if unsealed.get("sealed") != Some(&Value::Bool(false)) {
            return Err(Error::OpenBao {
                method: "PUT",
                path: "sys/unseal".into(),
                status: 200,
                errors: format!("still sealed: {unsealed}"),
            });
        }
        Ok(())
    }

    /// `sys/health` as a status code whatever the state (200 active, 429 standby, 501
    /// uninitialised, 503 sealed), or the transport error.
    pub async fn health_code(&self) -> Result<u16> {
        let resp = self
            .http
            .get(format!("{}/v1/sys/health", self.addr))
            .send()
            .await
            .map_err(|source| Error::OpenBaoTransport {
                method: "GET",
                path: "sys/health".into(),
                source,
            })?;
        Ok(resp.status().as_u16())
    }

    /// `POST <path>` with the root token: any administrative write (mounts, engine configs,
    /// roles) the helpers here do not name.
    pub async fn write(&self, path: &str, body: Value) -> Result<Option<Value>> {
        self.admin(reqwest::Method::POST, path, body).await
    }

    /// Mounts KV v2 at `mount` (idempotent; the dev server has `secret/` already).
    pub async fn enable_kv2(&self, mount: &str) -> Result<()> {
        if self.is_mounted("sys/mounts", mount).await? {
            return Ok(());
        }
        self.admin(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await?;
        Ok(())
    }

    /// Base address, e.g. `http://127.0.0.1:8200`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The dev server's root token (test environment only).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Option<Value>> {
        let method_name: &'static str = match method.as_str() {
            "GET" => "GET",
            "PUT" => "PUT",
            "POST" => "POST",
            "DELETE" => "DELETE",
            _ => "LIST",
        };
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(namespace) = &self.namespace {
            req = req.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let transport = |source| Error::OpenBaoTransport {
            method: method_name,
            path: path.to_owned(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        let value: Option<Value> = if text.trim().is_empty() {
            None
        } else {
            serde_json::from_str(&text).ok()
        };
        if !status.is_success() {
            let errors = value
                .as_ref()
                .and_then(|v| v.get("errors"))
                .map(|e| e.to_string())
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(Error::OpenBao {
                method: method_name,
                path: path.to_owned(),
                status: status.as_u16(),
                errors,
            });
        }
        Ok(value)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Option<Value>> {
        self.call(method, path, Some(&self.root_token), Some(body))
            .await
    }

    /// `GET /v1/sys/health`.
    pub async fn health(&self) -> Result<Value> {
        Ok(self
            .call(reqwest::Method::GET, "sys/health", None, None)
            .await?
            .unwrap_or_default())
    }

    /// Whether `mount` is in the listing at `listing` (`sys/auth` or `sys/mounts`).
    async fn is_mounted(&self, listing: &str, mount: &str) -> Result<bool> {
        let mounts = self
            .call(reqwest::Method::GET, listing, Some(&self.root_token), None)
            .await?
            .unwrap_or_default();
        Ok(mounts
            .get("data")
            .and_then(|d| d.get(format!("{mount}/")))
            .is_some())
    }

    /// Enables an auth method of `kind` at `mount` (idempotent).
    pub async fn enable_auth(&self, mount: &str, kind: &str) -> Result<()> {
        if self.is_mounted("sys/auth", mount).await? {
            return Ok(());
        }
        self.admin(
            reqwest::Method::POST,
            &format!("sys/auth/{mount}"),
            json!({ "type": kind }),
        )
        .await?;
        Ok(())
    }

    /// Points the Kubernetes auth method at an API server; OpenBao validates pod tokens with
    /// TokenReview using `reviewer_jwt`.
    pub async fn configure_kubernetes_auth(
        &self,
        mount: &str,
        host: &str,
        ca_pem: &str,
        reviewer_jwt: &str,
    ) -> Result<()> {
        self.enable_auth(mount, "kubernetes").await?;
        self.admin(
            reqwest::Method::POST,
            &format!("auth/{mount}/config"),
            json!({
                "kubernetes_host": host,
                "kubernetes_ca_cert": ca_pem,
                "token_reviewer_jwt": reviewer_jwt,
                "disable_local_ca_jwt": true,
            }),
        )
        .await?;
        Ok(())
    }

    /// Writes an ACL policy.
    pub async fn put_policy(&self, name: &str, hcl: &str) -> Result<()> {
        self.admin(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": hcl }),
        )
        .await?;
        Ok(())
    }

    /// Writes a policy allowing `read` on KV v2 `mount/path` (and its children when `path` ends in `*`).
    pub async fn put_kv_read_policy(&self, name: &str, mount: &str, paths: &[&str]) -> Result<()> {
        let hcl: String = paths
            .iter()
            .map(|p| format!("path \"{mount}/data/{p}\" {{ capabilities = [\"read\"] }}\npath \"{mount}/metadata/{p}\" {{ capabilities = [\"read\"] }}\n"))
            .collect();
        self.put_policy(name, &hcl).await
    }

    /// Creates or replaces a Kubernetes auth role.
    pub async fn put_kubernetes_role(&self, mount: &str, role: &KubernetesRole) -> Result<()> {
        let mut body = json!({
            "bound_service_account_names": role.service_account_names,
            "bound_service_account_namespaces": role.service_account_namespaces,
            "token_policies": role.policies,
            "token_ttl": role.token_ttl,
        });
        if let Some(aud) = &role.audience {
            body["audience"] = json!(aud);
        }
        if let Some(max) = &role.token_max_ttl {
            body["token_max_ttl"] = json!(max);
        }
        self.admin(
            reqwest::Method::POST,
            &format!("auth/{mount}/role/{}", role.name),
            body,
        )
        .await?;
        Ok(())
    }

    /// Writes a KV v2 secret; returns the new version.
    pub async fn kv_put(&self, mount: &str, path: &str, data: Value) -> Result<u64> {
        let resp = self
            .admin(
                reqwest::Method::POST,
                &format!("{mount}/data/{path}"),
                json!({ "data": data }),
            )
            .await?;
        Ok(resp
            .and_then(|v| v.pointer("/data/version").and_then(Value::as_u64))
            .unwrap_or(0))
    }

    /// Reads a KV v2 secret's data with `token`.
    pub async fn kv_get(&self, token: &str, mount: &str, path: &str) -> Result<Value> {
        let resp = self
            .call(
                reqwest::Method::GET,
                &format!("{mount}/data/{path}"),
                Some(token),
                None,
            )
            .await?;
        Ok(resp
            .and_then(|v| v.pointer("/data/data").cloned())
            .unwrap_or_default())
    }

    /// Logs in through the Kubernetes auth method with a ServiceAccount token; returns the client token.
    pub async fn login_kubernetes(&self, mount: &str, role: &str, jwt: &str) -> Result<String> {
        let resp = self
            .call(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(json!({ "role": role, "jwt": jwt })),
            )
            .await?;
        resp.and_then(|v| {
            v.pointer("/auth/client_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .ok_or_else(|| Error::OpenBao {
            method: "POST",
            path: format!("auth/{mount}/login"),
            status: 200,
            errors: "the answer carried no auth.client_token".to_owned(),
        })
    }
}
