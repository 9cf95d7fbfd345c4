//! The sidecar's OpenBao client against the real OpenBao and API server: a pod identity from
//! TokenRequest logs in with Kubernetes auth and reads KV v2; the wrong ServiceAccount is refused
//! with a message that says what to check; 50 concurrent reads of one secret reach OpenBao once,
//! counted by a proxy in front of OpenBao.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use phantom_conformance::counting_proxy::CountingProxy;
use phantom_conformance::harness::{Case, run};
use phantom_conformance::{Env, EnvOptions, PodIdentity, random_hex};
use phantom_openbao::OpenBaoClient;

fn main() {
    run(
        EnvOptions::default(),
        vec![
            Case::new("pod_identity_logs_in_and_reads_kv", logs_in_and_reads),
            Case::new(
                "wrong_service_account_is_refused_clearly",
                wrong_service_account,
            ),
            Case::new("fifty_concurrent_reads_reach_openbao_once", reads_coalesce),
            Case::new(
                "proxy_delivers_rotates_and_survives_an_outage",
                proxy_delivers_rotates_and_survives_an_outage,
            ),
            Case::new(
                "proxy_and_exec_processes_never_log_a_secret",
                processes_never_log_a_secret,
            ),
            Case::new(
                "key_release_refusal_keeps_values_in_openbao",
                key_release_refusal,
            ),
            Case::new(
                "tls_pins_and_client_certificates_against_a_real_openbao",
                tls_pinning_and_mtls,
            ),
            Case::new(
                "tokens_are_renewed_and_replaced_before_they_expire",
                tokens_renewed,
            ),
            Case::new(
                "bindings_read_inside_their_openbao_namespace",
                openbao_namespaces,
            ),
            Case::new(
                "dynamic_database_credentials_are_renewed_replaced_and_revoked",
                dynamic_database_credentials,
            ),
        ],
    )
}

/// A sidecar configuration reading `plan` (SecretBindings as admission hands them over) from
/// `openbao_addr` as the pod whose token is in `token`: socket delivery only, grace 60 s, the
/// bindings' refresh interval.
fn sidecar(
    openbao_addr: String,
    token: &std::path::Path,
    ns: &str,
    plan: serde_json::Value,
) -> anyhow::Result<phantom_runtime_proxy::proxy::ProxyConfig> {
    Ok(phantom_runtime_proxy::proxy::ProxyConfig {
        openbao_addr,
        tls: Default::default(),
        token_path: token.to_owned(),
        secrets_dir: PathBuf::from("/nonexistent"),
        socket_path: PathBuf::from("/nonexistent/proxy.sock"),
        sockets_dir: None,
        plan: serde_json::from_value(plan)?,
        wrapped_containers: vec![],
        grace: std::time::Duration::from_secs(60),
        refresh_override: None,
        namespace: ns.to_owned(),
        key_release: None,
        broker: None,
        metrics: Default::default(),
        file_root: None,
        revoke_on_shutdown: true,
    })
}

/// The pod's projected token as the kubelet would write it.
/// Writes a new random password at `secret/<path>` in the environment's OpenBao; returns it.
async fn rotate(env: &Env, path: &str) -> anyhow::Result<String> {
    let rotated = format!("rotated-{}", random_hex(12));
    env.openbao()
        .kv_put("secret", path, serde_json::json!({"password": rotated}))
        .await?;
    Ok(rotated)
}

/// Waits until the delivered file holds `value` (a rotation reaching it).
async fn wait_for_file(file: &std::path::Path, value: &str) -> anyhow::Result<()> {
    phantom_conformance::wait::until(
        "the rotated value in the file",
        std::time::Duration::from_secs(15),
        std::time::Duration::from_millis(100),
        || async {
            anyhow::Ok((std::fs::read_to_string(file).unwrap_or_default() == value).then_some(()))
        },
    )
    .await?;
    Ok(())
}

fn token_file(env: &Env, identity: &PodIdentity) -> anyhow::Result<PathBuf> {
    let path = env.dir().join(format!("token-{}", random_hex(4)));
    std::fs::write(&path, &identity.token)?;
    Ok(path)
}

/// A namespace with the app's secret, role and ServiceAccount, and that ServiceAccount's token
/// written where the kubelet would project it.
struct App {
    ns: String,
    path: String,
    value: String,
    identity: PodIdentity,
    token: PathBuf,
}

impl App {
    async fn new(env: &Env) -> anyhow::Result<Self> {
        let ns = env.create_namespace("rt", &[]).await?;
        let (path, value) = env.provision_app_secret(&ns).await?;
        let identity = env.pod_identity(&ns, "app").await?;
        let token = token_file(env, &identity)?;
        Ok(Self {
            ns,
            path,
            value,
            identity,
            token,
        })
    }

    fn role(&self) -> String {
        format!("{}-app", self.ns)
    }
}

async fn logs_in_and_reads(env: Arc<Env>) -> anyhow::Result<()> {
    let app = App::new(&env).await?;
    let App {
        ns, path, value, ..
    } = &app;
    let client = OpenBaoClient::new(env.openbao().addr())?;
    let session = client
        .login_kubernetes("kubernetes", &app.role(), &app.token)
        .await?;
    ensure!(
        session.lease_duration.as_secs() > 0,
        "the session has a lease"
    );
    let secret = client.read_kv(&session, "secret", path, None).await?;
    ensure!(secret.version == 1, "version {}", secret.version);
    let password = secret.data.get("password").context("password key")?;
    ensure!(password.expose() == value, "read back a different value");
    let printed = format!("{session:?} {secret:?}");
    ensure!(
        !printed.contains(value.as_str()),
        "Debug output shows the secret value"
    );
    ensure!(
        !printed.contains(session.token.expose()),
        "Debug output shows the OpenBao token"
    );

    let missing = client
        .read_kv(&session, "secret", &format!("{ns}/nope"), None)
        .await;
    match missing {
        Ok(_) => bail!("a missing secret was read"),
        Err(e) => ensure!(
            e.to_string().contains("404") && e.to_string().contains("no such secret"),
            "{e}"
        ),
    }
    Ok(())
}

async fn wrong_service_account(env: Arc<Env>) -> anyhow::Result<()> {
    let ns = env.create_namespace("rt", &[]).await?;
    env.provision_app_secret(&ns).await?;
    let intruder = env.pod_identity(&ns, "intruder").await?;
    let client = OpenBaoClient::new(env.openbao().addr())?;
    let refused = client
        .login_kubernetes(
            "kubernetes",
            &format!("{ns}-app"),
            &token_file(&env, &intruder)?,
        )
        .await;
    match refused {
        Ok(_) => bail!("a ServiceAccount the role does not bind logged in"),
        Err(e) => {
            let message = e.to_string();
            ensure!(
                message.contains("refused the Kubernetes login")
                    && message.contains(&format!("role {ns}-app"))
                    && message.contains("ServiceAccount"),
                "the refusal says what to check: {message}"
            );
            ensure!(
                !message.contains(&intruder.token),
                "the message shows the token"
            );
        }
    }
    let unreachable = OpenBaoClient::new("http://127.0.0.1:9")?
        .login_kubernetes("kubernetes", "r", &token_file(&env, &intruder)?)
        .await
        .expect_err("nothing listens on port 9");
    ensure!(
        unreachable
            .to_string()
            .contains("http://127.0.0.1:9 is unreachable"),
        "{unreachable}"
    );
    Ok(())
}

async fn reads_coalesce(env: Arc<Env>) -> anyhow::Result<()> {
    let app = App::new(&env).await?;
    let App { path, value, .. } = &app;
    // 200 ms per answer: the 50 callers overlap for certain (on loopback a read can finish
    // before the scheduler has started the last caller, which is not what is being tested).
    let proxy = CountingProxy::start_with_latency(
        env.openbao().addr(),
        ([127, 0, 0, 1], 0).into(),
        std::time::Duration::from_millis(200),
    )
    .await?;
    let client = OpenBaoClient::new(proxy.url())?;
    let session = client
        .login_kubernetes("kubernetes", &app.role(), &app.token)
        .await?;
    let reads = (0..50).map(|_| client.read_kv_coalesced(&session, "secret", path, None));
    for read in futures::future::join_all(reads).await {
        ensure!(
            read?.data["password"].expose() == value,
            "every caller gets the value"
        );
    }
    let asked = proxy.count("GET", &format!("/v1/secret/data/{path}"));
    ensure!(
        asked == 1,
        "OpenBao was asked {asked} times for {path}, expected once"
    );
    ensure!(
        proxy.count("POST", "/v1/auth/kubernetes/login") == 1,
        "one login"
    );
    Ok(())
}

async fn proxy_delivers_rotates_and_survives_an_outage(env: Arc<Env>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use phantom_runtime_proxy::proxy::{ProxyConfig, refresh_loop, start};
    use phantom_runtime_proxy::socket::{SocketState, serve};

    let app = App::new(&env).await?;
    let App {
        ns, path, value, ..
    } = &app;
    let outage = CountingProxy::start(env.openbao().addr()).await?;
    let addr = outage.addr;
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": format!("{ns}-app")},
                 "secrets": [{"name": "password", "path": path, "key": "password",
                              "delivery": [{"kind": "env", "name": "DB_PASSWORD"},
                                           {"kind": "file", "path": "db/password"}]}]}
    }]);
    // The pod's memory-backed volume: the proxy refuses to write secret files anywhere else.
    let shm = pod_volume()?;
    let dir = shm.path().to_owned();
    let config = Arc::new(ProxyConfig {
        secrets_dir: dir.join("secrets"),
        socket_path: dir.join("secrets/.phantom/proxy.sock"),
        wrapped_containers: vec!["app".into()],
        grace: Duration::from_secs(30),
        refresh_override: Some(Duration::from_millis(300)),
        ..sidecar(outage.url(), &app.token, ns, plan)?
    });
    let state = SocketState::new(None);
    let (provider, contents) = start(&config, &state).await?;
    let _server = serve(state.clone(), &config.socket_path)?;
    let refresher = tokio::spawn(refresh_loop(
        config.clone(),
        state.clone(),
        provider,
        contents,
        std::future::pending(),
    ));

    // env through the socket, the way phantom-exec asks; the file with mode 0400.
    let vars = phantom_runtime_proxy::exec::fetch_env(
        &config.socket_path,
        "app",
        &phantom_runtime_proxy::exec::Server::Sidecar,
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        vars.get("DB_PASSWORD").map(|v| v.expose()) == Some(value.as_str()),
        "env delivery"
    );
    let file = config.secrets_dir.join("db/password");
    ensure!(std::fs::read_to_string(&file)? == *value, "file delivery");
    ensure!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777 == 0o400,
        "file mode"
    );

    // Rotation in OpenBao reaches the file within a few refresh intervals.
    let rotated = rotate(&env, path).await?;
    wait_for_file(&file, &rotated).await?;

    // OpenBao unreachable: values still served for the grace period, marked degraded; back:
    // healthy.
    drop(outage);
    let socket = config.socket_path.clone();
    phantom_conformance::wait::until(
        "degraded health",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let state = state.clone();
            async move { anyhow::Ok(state_is_degraded(&state).then_some(())) }
        },
    )
    .await?;
    let during = phantom_runtime_proxy::exec::fetch_env(
        &socket,
        "app",
        &phantom_runtime_proxy::exec::Server::Sidecar,
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        during["DB_PASSWORD"].expose() == rotated,
        "the last good value is served during the outage"
    );
    let _back = CountingProxy::start_on(env.openbao().addr(), addr).await?;
    phantom_conformance::wait::until(
        "healthy again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let state = state.clone();
            async move { anyhow::Ok((!state_is_degraded(&state)).then_some(())) }
        },
    )
    .await?;

    // OpenBao refuses the pod now (its policy no longer covers the path: 403): withdrawn at once,
    // without waiting for the grace period — the file is removed, the socket refuses, watchers
    // hear it. Covered again: delivered again.
    let bao = env.openbao();
    bao.put_kv_read_policy(ns, "secret", &["nothing-here/*"])
        .await?;
    let withdrawn_at = std::time::Instant::now();
    phantom_conformance::wait::until(
        "the refused secret's file removed",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let file = file.clone();
            async move { anyhow::Ok((!file.exists()).then_some(())) }
        },
    )
    .await?;
    ensure!(
        withdrawn_at.elapsed() < config.grace,
        "a refusal does not wait for the grace period"
    );
    let refused = phantom_runtime_proxy::exec::fetch_env(
        &socket,
        "app",
        &phantom_runtime_proxy::exec::Server::Sidecar,
        Duration::from_secs(2),
    )
    .await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("withdrew")),
        "the socket refuses withdrawn values: {:?}",
        refused.map(|v| v.len())
    );
    bao.put_kv_read_policy(ns, "secret", &[&format!("{ns}/*")])
        .await?;
    wait_for_file(&file, &rotated).await?;
    let again = phantom_runtime_proxy::exec::fetch_env(
        &socket,
        "app",
        &phantom_runtime_proxy::exec::Server::Sidecar,
        Duration::from_secs(5),
    )
    .await?;
    ensure!(
        again["DB_PASSWORD"].expose() == rotated,
        "delivered again once OpenBao serves the pod"
    );
    refresher.abort();

    // First start with OpenBao unreachable: a clear error naming the address.
    drop(_back);
    let cold = SocketState::new(None);
    match start(&config, &cold).await {
        Ok(_) => bail!("started without OpenBao"),
        Err(e) => ensure!(
            e.to_string().contains(&format!("http://{addr}"))
                && e.to_string().contains("unreachable"),
            "{e}"
        ),
    }
    Ok(())
}

/// A role whose tokens live 3 s and at most 6 s: the proxy renews at two thirds of the lease
/// and logs in again when the maximum leaves too little, so reads never meet an expired token.
async fn tokens_renewed(env: Arc<Env>) -> anyhow::Result<()> {
    use std::time::Duration;

    use phantom_conformance::KubernetesRole;
    use phantom_runtime_proxy::proxy::{ProxyConfig, refresh_loop, start};
    use phantom_runtime_proxy::socket::SocketState;

    let app = App::new(&env).await?;
    let App { ns, path, .. } = &app;
    env.openbao()
        .put_kubernetes_role(
            "kubernetes",
            &KubernetesRole {
                token_ttl: "3s".into(),
                token_max_ttl: Some("6s".into()),
                ..KubernetesRole::for_service_account(&app.role(), ns, "app", &[ns])
            },
        )
        .await?;
    let counter = CountingProxy::start(env.openbao().addr()).await?;
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": app.role()},
                 "secrets": [{"name": "password", "path": path, "key": "password",
                              "delivery": [{"kind": "socket"}]}]}
    }]);
    let config = Arc::new(ProxyConfig {
        refresh_override: Some(Duration::from_millis(250)),
        ..sidecar(counter.url(), &app.token, ns, plan)?
    });
    let state = SocketState::new(None);
    let (provider, contents) = start(&config, &state).await?;
    let refresher = tokio::spawn(refresh_loop(
        config.clone(),
        state.clone(),
        provider,
        contents,
        std::future::pending(),
    ));
    tokio::time::sleep(Duration::from_secs(9)).await;
    refresher.abort();
    let renewals = counter.count("POST", "/v1/auth/token/renew-self");
    let logins = counter.count("POST", "/v1/auth/kubernetes/login");
    let reads = counter.count("GET", &format!("/v1/secret/data/{path}"));
    ensure!(renewals >= 2, "{renewals} renewals in 9 s of 3 s tokens");
    ensure!(
        (2..=4).contains(&logins),
        "{logins} logins: one at start, then one per 6 s maximum"
    );
    ensure!(reads >= 20, "only {reads} reads in 9 s at 250 ms");
    ensure!(
        !state.is_degraded(),
        "a refresh failed on an expired token (degraded)"
    );
    ensure!(
        counter.status_count(403) == 0,
        "OpenBao refused an expired token {} times",
        counter.status_count(403)
    );
    Ok(())
}

/// A team's secrets, auth method and role inside an OpenBao namespace: a binding naming the
/// namespace logs in and reads there; the same binding without it finds no such role at the root.
async fn openbao_namespaces(env: Arc<Env>) -> anyhow::Result<()> {
    use phantom_runtime_proxy::proxy::start;
    use phantom_runtime_proxy::socket::SocketState;

    let ns = env.create_namespace("bao-ns", &[]).await?;
    let team = format!("team-{}", random_hex(4));
    let inside = env.openbao().create_namespace(&team).await?;
    inside.enable_kv2("secret").await?;
    env.configure_kubernetes_auth_on(&inside).await?;
    let (path, value) = Env::provision_app_secret_on(&inside, &ns).await?;
    let token = token_file(&env, &env.pod_identity(&ns, "app").await?)?;
    let config = |namespace: Option<&str>| {
        let plan = serde_json::json!([{
            "name": "db",
            "spec": {"selector": {"serviceAccountName": "app"},
                     "openbao": {"role": format!("{ns}-app"), "namespace": namespace},
                     "secrets": [{"name": "password", "path": path, "key": "password",
                                  "delivery": [{"kind": "socket"}]}]}
        }]);
        sidecar(env.openbao().addr().to_owned(), &token, &ns, plan).expect("plan")
    };
    let (_, contents) = start(&config(Some(&team)), &SocketState::new(None)).await?;
    ensure!(
        contents.secrets["password"].value.expose() == value,
        "read inside namespace {team}"
    );
    match start(&config(None), &SocketState::new(None)).await {
        Ok(_) => bail!("the team's role answered outside its namespace"),
        Err(e) => ensure!(
            e.to_string().contains("refused the Kubernetes login"),
            "{e}"
        ),
    }
    Ok(())
}

/// OpenBao's database engine in front of a real PostgreSQL: the proxy delivers working
/// credentials, renews their lease, takes new ones when `max_ttl` nears (a new version, like a
/// rotation), and on shutdown revokes its token so PostgreSQL drops the credentials (the role has
/// no `VALID UNTIL`: only the revocation can end them within the test).
async fn dynamic_database_credentials(env: Arc<Env>) -> anyhow::Result<()> {
    use std::time::Duration;

    use phantom_conformance::KubernetesRole;
    use phantom_runtime_proxy::proxy::{ProxyConfig, refresh_loop, start};
    use phantom_runtime_proxy::socket::SocketState;
    use serde_json::json;

    let pg = env.start_postgres().await?;
    let bao = env.openbao();
    let app = App::new(&env).await?;
    let ns = app.ns.clone();
    let mount = format!("db-{}", random_hex(4));
    bao.write(&format!("sys/mounts/{mount}"), json!({"type": "database"}))
        .await?;
    let (admin, admin_password) = pg.admin();
    bao.write(
        &format!("{mount}/config/pg"),
        json!({"plugin_name": "postgresql-database-plugin", "connection_url": pg.openbao_connection_url(),
               "username": admin, "password": admin_password, "allowed_roles": "app"}),
    )
    .await?;
    bao.write(
        &format!("{mount}/roles/app"),
        json!({"db_name": "pg", "default_ttl": "4s", "max_ttl": "9s",
               "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';"]}),
    )
    .await?;
    let policy = format!("{ns}-db");
    bao.put_policy(
        &policy,
        &format!("path \"{mount}/creds/app\" {{ capabilities = [\"read\"] }}"),
    )
    .await?;
    bao.put_kubernetes_role(
        "kubernetes",
        &KubernetesRole::for_service_account(&app.role(), &ns, "app", &[&ns, &policy]),
    )
    .await?;
    let counter = CountingProxy::start(bao.addr()).await?;
    let plan = json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": app.role()},
                 "secrets": [{"name": "db", "mount": mount, "path": "creds/app", "engine": "dynamic",
                              "delivery": [{"kind": "socket"}]}]}
    }]);
    let config = Arc::new(ProxyConfig {
        refresh_override: Some(Duration::from_millis(250)),
        ..sidecar(counter.url(), &app.token, &ns, plan)?
    });
    let credentials = |state: &SocketState| -> anyhow::Result<(u64, String, String)> {
        let contents = state.contents();
        let held = contents.secrets.get("db").context("no db secret")?;
        let creds: serde_json::Value = serde_json::from_str(held.value.expose())?;
        Ok((
            held.version,
            creds["username"].as_str().unwrap_or_default().to_owned(),
            creds["password"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    let state = SocketState::new(None);
    let (provider, contents) = start(&config, &state).await?;
    let (_, first_user, first_password) = credentials(&state)?;
    ensure!(
        pg.can_log_in(&first_user, &first_password)?,
        "the delivered credentials log in to PostgreSQL"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refresher = tokio::spawn(refresh_loop(
        config.clone(),
        state.clone(),
        provider,
        contents,
        async move {
            let _ = stopped.await;
        },
    ));
    let (second_user, second_password) = phantom_conformance::wait::until(
        "new credentials before the 9 s max_ttl runs out",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let state = state.clone();
            async move {
                let (version, user, password) = credentials(&state)?;
                anyhow::Ok((version >= 2).then_some((user, password)))
            }
        },
    )
    .await?;
    ensure!(
        second_user != first_user,
        "the second read issued a new user"
    );
    ensure!(
        counter.count("PUT", "/v1/sys/leases/renew") >= 1,
        "the lease was renewed before new credentials were read"
    );
    ensure!(
        pg.can_log_in(&second_user, &second_password)?,
        "the new credentials log in"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), refresher)
        .await
        .context("the refresh loop did not stop after shutdown")??;
    ensure!(
        counter.count("POST", "/v1/auth/token/revoke-self") >= 1,
        "the token was revoked at shutdown"
    );
    phantom_conformance::wait::until(
        "PostgreSQL refusing the revoked credentials",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async { anyhow::Ok((!pg.can_log_in(&second_user, &second_password)?).then_some(())) },
    )
    .await?;
    Ok(())
}

fn state_is_degraded(state: &phantom_runtime_proxy::socket::SocketState) -> bool {
    state.is_degraded()
}

/// A full run of the real binaries: `phantom-proxy` fetches and serves, rotates; `phantom-exec`
/// starts an application that proves it has the secret by printing its length. Every line both
/// binaries wrote is then searched for both values.
async fn processes_never_log_a_secret(env: Arc<Env>) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let proxy_bin = phantom_conformance::bins::built("phantom-proxy")?;
    let exec_bin = phantom_conformance::bins::built("phantom-exec")?;
    let app = App::new(&env).await?;
    let App {
        ns,
        path,
        value,
        identity,
        ..
    } = &app;
    // The pod's memory-backed volume: the proxy refuses to write secret files anywhere else.
    let shm = pod_volume()?;
    let dir = shm.path().to_owned();
    let socket = dir.join("secrets/.phantom/proxy.sock");
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": format!("{ns}-app")}, "rotationNotice": "sighup",
                 "secrets": [{"name": "password", "path": path, "key": "password",
                              "delivery": [{"kind": "env", "name": "DB_PASSWORD"}, {"kind": "file", "path": "db/password"}]}]}
    }]);
    let log = dir.join("proxy.log");
    std::fs::create_dir_all(&dir)?;
    let status = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut proxy = Command::new(&proxy_bin)
        .env("PHANTOM_OPENBAO_ADDR", env.openbao().addr())
        .env("PHANTOM_TOKEN_PATH", &app.token)
        .env("PHANTOM_SECRETS_DIR", dir.join("secrets"))
        .env("PHANTOM_SOCKET", &socket)
        .env("PHANTOM_PLAN", plan.to_string())
        .env("PHANTOM_WRAPPED_CONTAINERS", "app")
        .env("PHANTOM_REFRESH_SECONDS", "1")
        .env("PHANTOM_POD_NAMESPACE", ns)
        .env("PHANTOM_POD_NAME", "web-0")
        .env(
            "PHANTOM_KEY_RELEASE",
            key_release_plan(ns, "binding.metadata.namespace == pod.metadata.namespace && pod.metadata.name == 'web-0'"),
        )
        .env("PHANTOM_LOG", "debug")
        .env("PHANTOM_STATUS_ADDR", status.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting phantom-proxy")?;
    let result = async {
        let app = tokio::process::Command::new(&exec_bin)
            .args([
                "--container",
                "app",
                "--",
                "/bin/sh",
                "-c",
                "printf %s \"$DB_PASSWORD\" | wc -c",
            ])
            .env("PHANTOM_SOCKET", &socket)
            .env("PHANTOM_EXEC_WAIT_SECONDS", "30")
            .output()
            .await?;
        let printed = String::from_utf8_lossy(&app.stdout).trim().to_owned();
        ensure!(
            app.status.success() && printed == value.len().to_string(),
            "the application saw {printed:?}: {}",
            String::from_utf8_lossy(&app.stderr)
        );
        // A long-running application that records SIGHUPs (the test shares the PID namespace,
        // as a pod with shareProcessNamespace does).
        let hup = dir.join("hup");
        let ready = dir.join("ready");
        let mut daemon = tokio::process::Command::new(&exec_bin)
            .args([
                "--container",
                "app",
                "--",
                "/bin/sh",
                "-c",
                "trap 'echo hup >> \"$HUP\"' HUP; touch \"$READY\"; while :; do sleep 0.1; done",
            ])
            .env("PHANTOM_SOCKET", &socket)
            .env("HUP", &hup)
            .env("READY", &ready)
            .stderr(std::fs::File::create(dir.join("daemon.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        phantom_conformance::wait::until(
            "the application running",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { anyhow::Ok(ready.exists().then_some(())) },
        )
        .await?;
        let rotated = rotate(&env, path).await?;
        phantom_conformance::wait::until(
            "SIGHUP at the application after the rotation",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || async { anyhow::Ok(hup.exists().then_some(())) },
        )
        .await?;
        let _ = daemon.kill().await;
        wait_for_file(&dir.join("secrets/db/password"), &rotated).await?;
        // The status port: ready, and metrics that count the work without carrying a value.
        let http = reqwest::Client::new();
        let ready = http.get(format!("http://{status}/readyz")).send().await?;
        ensure!(ready.status() == 200, "/readyz answered {}", ready.status());
        let metrics = http
            .get(format!("http://{status}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for line in [
            r#"phantom_proxy_openbao_requests_total{operation="login",result="ok"} 1"#,
            "phantom_proxy_secrets 1",
            "phantom_proxy_degraded 0",
        ] {
            ensure!(
                metrics.contains(line),
                "{line} missing from /metrics:\n{metrics}"
            );
        }
        ensure!(
            metrics.contains("phantom_proxy_rotations_total 1"),
            "the rotation is counted:\n{metrics}"
        );
        let mut everything = std::fs::read_to_string(&log)?;
        everything.push_str(&metrics);
        everything.push_str(&String::from_utf8_lossy(&app.stderr));
        everything.push_str(&std::fs::read_to_string(dir.join("daemon.log"))?);
        ensure!(
            everything.contains("process hardened"),
            "the proxy reports its hardening:\n{everything}"
        );
        ensure!(
            everything.contains("secrets delivered"),
            "the proxy logged its work:\n{everything}"
        );
        for secret in [value, &rotated, &identity.token] {
            ensure!(
                !everything.contains(secret.as_str()),
                "a secret appears in the binaries' output:\n{everything}"
            );
        }
        anyhow::Ok(())
    }
    .await;
    let _ = proxy.kill();
    let _ = proxy.wait();
    result
}

/// A key-release plan as admission writes it, with one condition `expression` named `gate`.
fn key_release_plan(ns: &str, expression: &str) -> String {
    serde_json::json!({
        "policyDigest": "sha256:test",
        "policies": [{"name": "gatekeeper", "keyRelease": {"conditions": [
            {"name": "gate", "expression": expression, "message": "this pod does not meet the gate"}]}}],
        "requirements": [],
        "pod": {"metadata": {"namespace": ns, "labels": {"tier": "dev"}}, "spec": {"serviceAccountName": "app"}}
    })
    .to_string()
}

/// A key-release condition that does not hold: the real `phantom-proxy` exits non-zero naming the
/// policy and the condition, and OpenBao is never asked for the value (nor logged in to).
async fn key_release_refusal(env: Arc<Env>) -> anyhow::Result<()> {
    use std::time::Duration;

    let proxy_bin = phantom_conformance::bins::built("phantom-proxy")?;
    let app = App::new(&env).await?;
    let App { ns, path, .. } = &app;
    let counter = CountingProxy::start(env.openbao().addr()).await?;
    let shm = pod_volume()?;
    let dir = shm.path().to_owned();
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": format!("{ns}-app")},
                 "secrets": [{"name": "password", "path": path, "key": "password",
                              "delivery": [{"kind": "file", "path": "db/password"}]}]}
    }]);
    let run = tokio::process::Command::new(&proxy_bin)
        .env("PHANTOM_OPENBAO_ADDR", counter.url())
        .env("PHANTOM_TOKEN_PATH", &app.token)
        .env("PHANTOM_SECRETS_DIR", dir.join("secrets"))
        .env("PHANTOM_SOCKET", dir.join("secrets/.phantom/proxy.sock"))
        .env("PHANTOM_PLAN", plan.to_string())
        .env("PHANTOM_POD_NAMESPACE", ns)
        .env(
            "PHANTOM_KEY_RELEASE",
            key_release_plan(ns, "pod.metadata.labels.tier == 'prod'"),
        )
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .context("phantom-proxy did not exit within 30 s after a refused key release")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "the proxy started anyway:\n{stderr}");
    ensure!(
        stderr.contains("SecretBinding db: key release refused by policy gatekeeper, condition gate: this pod does not meet the gate"),
        "the refusal names the binding, policy and condition:\n{stderr}"
    );
    ensure!(
        counter.count("GET", &format!("/v1/secret/data/{path}")) == 0
            && counter.count("POST", "/v1/auth/kubernetes/login") == 0,
        "OpenBao was asked despite the refusal"
    );
    ensure!(
        !dir.join("secrets/db/password").exists(),
        "a file was written"
    );
    Ok(())
}

/// A non-dev OpenBao with TLS listeners: trusted by CA, by pin, by both; a wrong pin or an
/// unknown CA refused as a TLS failure that names the pins; the mTLS listener refuses a sidecar
/// without a client certificate and serves one with it; the real binary reads its pins and
/// client certificate from the environment.
async fn tls_pinning_and_mtls(env: Arc<Env>) -> anyhow::Result<()> {
    use base64::Engine as _;
    use phantom_openbao::Error as ProxyError;
    use phantom_openbao::tls::TlsSettings;
    use sha2::{Digest, Sha256};

    let tls = env.start_tls_openbao().await?;
    let ns = env.create_namespace("tls", &[]).await?;
    let (path, value) = Env::provision_app_secret_on(&tls.admin, &ns).await?;
    let token = token_file(&env, &env.pod_identity(&ns, "app").await?)?;
    let role = format!("{ns}-app");
    // Computed here from the key rcgen generated, not with the code under test.
    let pin: [u8; 32] = Sha256::digest(&tls.server.spki_der).into();
    let other_key: [u8; 32] = Sha256::digest(&tls.client.spki_der).into();
    let ca = Some(tls.dir.join("ca.crt"));
    let read = |addr: String, settings: TlsSettings| {
        let (token, role, path) = (token.clone(), role.clone(), path.clone());
        async move {
            let client = OpenBaoClient::with_tls(addr, &settings)?;
            let session = client.login_kubernetes("kubernetes", &role, &token).await?;
            let secret = client.read_kv(&session, "secret", &path, None).await?;
            Ok::<_, ProxyError>(secret.data["password"].expose().to_owned())
        }
    };
    let by_ca = TlsSettings {
        ca_file: ca.clone(),
        ..TlsSettings::default()
    };
    ensure!(read(tls.addr.clone(), by_ca.clone()).await? == value, "CA");
    let inline_ca = TlsSettings {
        ca_pem: Some(env.ca().cert_pem.clone()),
        ..TlsSettings::default()
    };
    ensure!(
        read(tls.addr.clone(), inline_ca).await? == value,
        "CA handed over inline, as admission does"
    );
    let by_pin = TlsSettings {
        spki_pins: vec![pin],
        ..TlsSettings::default()
    };
    ensure!(
        read(tls.addr.clone(), by_pin.clone()).await? == value,
        "pin"
    );
    let both = TlsSettings {
        ca_file: ca.clone(),
        spki_pins: vec![other_key, pin],
        ..TlsSettings::default()
    };
    ensure!(
        read(tls.addr.clone(), both).await? == value,
        "CA and one of two pins"
    );

    // A certificate the CA signed but for another key: refused, naming both digests.
    let wrong_pin = TlsSettings {
        ca_file: ca.clone(),
        spki_pins: vec![other_key],
        ..TlsSettings::default()
    };
    match read(tls.addr.clone(), wrong_pin).await {
        Err(ProxyError::Tls {
            addr,
            cause,
            source,
        }) => {
            // Recognised by its type: the rustls error is on the source chain.
            let mut chain = source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static));
            let mut found_rustls = false;
            while let Some(link) = chain {
                found_rustls |= link.is::<rustls::Error>();
                // io::Error::source skips the error an io::Error wraps: step into it.
                chain = match link
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref)
                {
                    Some(wrapped) => Some(wrapped),
                    None => link.source(),
                };
            }
            ensure!(
                found_rustls,
                "the TLS error keeps rustls' error as its source"
            );
            let shown = base64::engine::general_purpose::STANDARD.encode(pin);
            ensure!(
                addr == tls.addr
                    && cause.contains("pinned public key mismatch")
                    && cause.contains(&shown),
                "the refusal names the presented key: {cause}"
            );
        }
        other => bail!("a wrong pin was not refused as a TLS failure: {other:?}"),
    }
    let stranger = phantom_conformance::CertificateAuthority::new("someone else")?;
    let stranger_file = tls.dir.join("stranger.crt");
    std::fs::write(&stranger_file, &stranger.cert_pem)?;
    let untrusted = TlsSettings {
        ca_file: Some(stranger_file),
        ..TlsSettings::default()
    };
    match read(tls.addr.clone(), untrusted).await {
        Err(e @ ProxyError::Tls { .. }) => ensure!(
            e.to_string().contains("PHANTOM_OPENBAO_CA_FILE"),
            "the error says what to check: {e}"
        ),
        other => bail!("an unknown CA was not refused as a TLS failure: {other:?}"),
    }

    // mTLS: no client certificate → refused; with one → served.
    match read(tls.mtls_addr.clone(), by_pin.clone()).await {
        Err(ProxyError::Tls { .. }) => {}
        other => {
            bail!("the mTLS listener served a sidecar without a client certificate: {other:?}")
        }
    }
    let with_cert = TlsSettings {
        client_cert: Some(tls.dir.join("client.crt")),
        client_key: Some(tls.dir.join("client.key")),
        ..by_pin
    };
    ensure!(
        read(tls.mtls_addr.clone(), with_cert).await? == value,
        "mTLS"
    );

    // The real binary, configured through its environment as admission would configure it.
    let proxy_bin = phantom_conformance::bins::built("phantom-proxy")?;
    let shm = pod_volume()?;
    let plan = serde_json::json!([{
        "name": "db",
        "spec": {"selector": {"serviceAccountName": "app"}, "openbao": {"role": role},
                 "secrets": [{"name": "password", "path": path, "key": "password",
                              "delivery": [{"kind": "file", "path": "db/password"}]}]}
    }]);
    let once = |pin: String| {
        tokio::process::Command::new(&proxy_bin)
            .arg("--once")
            .env("PHANTOM_OPENBAO_ADDR", &tls.mtls_addr)
            .env("PHANTOM_OPENBAO_SPKI_SHA256", pin)
            .env("PHANTOM_OPENBAO_CLIENT_CERT", tls.dir.join("client.crt"))
            .env("PHANTOM_OPENBAO_CLIENT_KEY", tls.dir.join("client.key"))
            .env("PHANTOM_TOKEN_PATH", &token)
            .env("PHANTOM_SECRETS_DIR", shm.path().join("secrets"))
            .env("PHANTOM_PLAN", plan.to_string())
            .kill_on_drop(true)
            .output()
    };
    let timeout = std::time::Duration::from_secs(30);
    let good = tokio::time::timeout(timeout, once(hex::encode(pin)))
        .await
        .context("phantom-proxy --once did not finish")??;
    ensure!(
        good.status.success(),
        "phantom-proxy --once over mTLS with a pin: {}",
        String::from_utf8_lossy(&good.stderr)
    );
    ensure!(
        std::fs::read_to_string(shm.path().join("secrets/db/password"))? == value,
        "the file holds the value read over mTLS"
    );
    let bad = tokio::time::timeout(
        timeout,
        once(format!(
            "sha256//{}",
            base64::engine::general_purpose::STANDARD.encode(other_key)
        )),
    )
    .await
    .context("phantom-proxy --once did not finish")??;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && stderr.contains("pinned public key mismatch"),
        "a wrong pin stops the sidecar with a clear error: {stderr}"
    );
    ensure!(
        !stderr.contains(value.as_str()),
        "the value in the error output"
    );
    Ok(())
}

/// A directory on tmpfs standing in for the pod's memory-backed volume (`/dev/shm` or `/run`).
fn pod_volume() -> anyhow::Result<tempfile::TempDir> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let base = ["/dev/shm", "/run"]
        .into_iter()
        .find(|d| {
            phantom_runtime_proxy::harden::filesystem_of(&mountinfo, std::path::Path::new(d))
                .as_deref()
                == Some("tmpfs")
        })
        .context("no tmpfs at /dev/shm or /run to stand in for the pod's memory-backed volume")?;
    Ok(tempfile::Builder::new()
        .prefix("phantom-pod-")
        .tempdir_in(base)?)
}
