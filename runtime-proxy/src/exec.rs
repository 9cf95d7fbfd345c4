//! `phantom-exec`: the wrapper in front of the application's command. It asks the sidecar over
//! its Unix socket for this container's environment variables (waiting, bounded, for the socket
//! to appear), sets them and `exec`s the original argv. Because `exec` replaces the process,
//! the application keeps the PID, receives its signals directly and its exit code is the
//! container's: there is no supervisor in between.
//!
//! Socket API used here: `GET /v1/env?container=<name>` → `{"env": {"NAME": "value", ...}}`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::{Error, Result, SecretValue};

/// What `phantom-exec` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `phantom-exec install <dest> [--volume <dir> <container>...]`: copy this binary to `dest`
    /// and lay out the secrets volume at `dir` for the wrapped containers (the init container's
    /// job).
    Install {
        dest: PathBuf,
        layout: Option<Layout>,
        /// daemonset mode: wait until the node agent answers on this socket.
        agent: Option<PathBuf>,
    },
    /// `phantom-exec --container <name> -- <argv...>`.
    Run {
        container: String,
        argv: Vec<OsString>,
    },
    /// `phantom-exec --help`: print [`HELP`].
    Help,
}

/// Parses `phantom-exec`'s arguments (after the program name).
/// `phantom-exec --help`.
pub const HELP: &str = "\
Phantom's exec wrapper: asks the sidecar for this container's secrets over its Unix socket, sets
them as environment variables and execs the command (same PID: signals and exit codes pass
through).

Usage: phantom-exec --container <name> -- <command> [args...]
       phantom-exec install <dest> [--volume <dir> <container>...]
                                        (copy this binary to <dest> and lay out the secrets volume
                                        for the wrapped containers; the init container does this)
       phantom-exec install <dest> --agent <socket>
                                        (injection mode daemonset: copy this binary to <dest> and
                                        wait until the node agent answers on <socket>)

Environment:
  PHANTOM_SOCKET             this container's socket [default: /phantom/socket/proxy.sock]
  PHANTOM_AGENT_TOKEN        daemonset mode: the projected token file this container proves its
                             pod with to the node agent
  PHANTOM_EXEC_WAIT_SECONDS  how long to wait for the sidecar or the agent, 1-86400
                             [default: 120]; once connected it must answer within this or 30 s,
                             whichever is less

Before the command runs, core dumps are switched off (RLIMIT_CORE 0, soft and hard): the
application's environment holds its secrets.

Exit codes (before the command runs): 64 bad arguments, 70 the sidecar could not deliver,
127 the command cannot be executed.
";

pub fn parse(args: Vec<OsString>) -> Result<Invocation> {
    let usage = "usage: phantom-exec --container <name> -- <command> [args...] | phantom-exec install <dest> [--volume <dir> <container>... | --agent <socket>]";
    let mut args = args.into_iter();
    match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("--help" | "-h") => Ok(Invocation::Help),
        Some("install") => {
            let Some(dest) = args.next() else {
                return Err(Error::Delivery(usage.into()));
            };
            let mut agent = None;
            let layout = match args.next() {
                None => None,
                Some(flag) if flag == "--agent" => {
                    let socket = args.next().ok_or_else(|| Error::Delivery(usage.into()))?;
                    if args.next().is_some() {
                        return Err(Error::Delivery(usage.into()));
                    }
                    agent = Some(PathBuf::from(socket));
                    None
                }
                Some(flag) if flag == "--volume" => {
                    let volume = args.next().ok_or_else(|| Error::Delivery(usage.into()))?;
                    let containers = args
                        .map(|c| {
                            c.into_string()
                                .ok()
                                .filter(|c| is_container_name(c))
                                .ok_or_else(|| {
                                    Error::Delivery(
                                        "container names are DNS labels (a-z, 0-9, -)".into(),
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Some(Layout {
                        volume: volume.into(),
                        containers,
                    })
                }
                Some(_) => return Err(Error::Delivery(usage.into())),
            };
            Ok(Invocation::Install {
                dest: dest.into(),
                layout,
                agent,
            })
        }
        Some("--container") => {
            let container = args
                .next()
                .and_then(|c| c.into_string().ok())
                .filter(|c| !c.is_empty())
                .ok_or_else(|| Error::Delivery(usage.into()))?;
            if args.next().as_ref().and_then(|a| a.to_str()) != Some("--") {
                return Err(Error::Delivery(usage.into()));
            }
            let argv: Vec<OsString> = args.collect();
            if argv.is_empty() {
                return Err(Error::Delivery(format!(
                    "no command to run after `--`; {usage}"
                )));
            }
            Ok(Invocation::Run { container, argv })
        }
        _ => Err(Error::Delivery(usage.into())),
    }
}

/// The longest `PHANTOM_EXEC_WAIT_SECONDS` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// How long to wait for the sidecar, from `PHANTOM_EXEC_WAIT_SECONDS` (`None`: unset).
pub fn wait_from(value: Option<&str>) -> Result<Duration> {
    let Some(value) = value else {
        return Ok(Duration::from_secs(120));
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if (1..=MAX_WAIT.as_secs()).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(Error::Delivery(format!(
            "PHANTOM_EXEC_WAIT_SECONDS must be a whole number of seconds from 1 to {}, got {value:?}",
            MAX_WAIT.as_secs()
        ))),
    }
}

/// How long the sidecar may take to answer once connected, at most: it answers from memory.
/// A shorter wait shortens it too.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The secrets volume as the sidecar and the wrapped containers mount it: `files/` for every
/// target, `sockets/<container>/` for each wrapped container alone. Made by the init container,
/// as the sidecar's user, before any other container starts: the kubelet would otherwise create
/// the subPath directories itself, owned by root, where the sidecar could not bind its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub volume: PathBuf,
    pub containers: Vec<String>,
}

impl Layout {
    /// Creates the directories (mode 0755: the wrapped containers run as the sidecar's user).
    pub fn create(&self) -> Result<()> {
        use phantom_crds::wellknown::injected::{FILES_SUBPATH, SOCKETS_SUBPATH};
        use std::os::unix::fs::PermissionsExt;
        let sockets = self.volume.join(SOCKETS_SUBPATH);
        let dirs = std::iter::once(self.volume.join(FILES_SUBPATH))
            .chain(std::iter::once(sockets.clone()))
            .chain(self.containers.iter().map(|c| sockets.join(c)));
        for dir in dirs {
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| {
                    Error::Delivery(format!(
                        "laying out the secrets volume: {}: {e}; is it mounted writable?",
                        dir.display()
                    ))
                })?;
        }
        Ok(())
    }
}

/// A Kubernetes container name (an RFC 1123 label): nothing that could leave `sockets/`.
fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Copies the running binary to `dest` (mode 0755) through a temporary file and a rename, so a
/// half-written wrapper is never executed.
pub fn install(dest: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let me =
        std::env::current_exe().map_err(|e| Error::Delivery(format!("locating myself: {e}")))?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&me, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map_err(|e| {
            Error::Delivery(format!(
                "installing into {}: {e}; is the shared volume mounted writable?",
                dest.display()
            ))
        })
}

#[derive(serde::Deserialize)]
struct EnvAnswer {
    env: BTreeMap<String, SecretValue>,
}

/// Who answers on the socket: the pod's sidecar, or (daemonset mode, with the container's token
/// to prove its pod) the node agent.
#[derive(Debug)]
pub enum Server {
    Sidecar,
    Agent { token: SecretValue },
}

impl Server {
    /// The agent when `PHANTOM_AGENT_TOKEN` names the token file (read now), else the sidecar.
    pub fn from_env(token_path: Option<&Path>) -> Result<Self> {
        let Some(path) = token_path else {
            return Ok(Self::Sidecar);
        };
        let token = std::fs::read_to_string(path).map_err(|e| {
            Error::Delivery(format!(
                "reading the agent token {} (PHANTOM_AGENT_TOKEN): {e}; is the phantom-agent-token volume mounted?",
                path.display()
            ))
        })?;
        Ok(Self::Agent {
            token: SecretValue::new(token.trim().to_owned()),
        })
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::Sidecar => "the Phantom sidecar",
            Self::Agent { .. } => "the Phantom node agent",
        }
    }

    fn what_to_check(&self) -> &'static str {
        match self {
            Self::Sidecar => {
                "check the phantom-proxy container's log and status (is OpenBao reachable?)"
            }
            Self::Agent { .. } => {
                "check that phantom-agent runs on this node and its log (is OpenBao reachable?)"
            }
        }
    }
}

/// Connects to `socket`, retrying until `deadline` (the sidecar may still be fetching, the agent
/// starting).
async fn connect(
    socket: &Path,
    server: &Server,
    wait: Duration,
    deadline: Instant,
) -> Result<tokio::net::UnixStream> {
    let mut told = false;
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Delivery(format!(
                    "{}'s socket {} did not accept connections within {wait:?} ({e}); {}",
                    server.describe(),
                    socket.display(),
                    server.what_to_check()
                )));
            }
            Err(e) => {
                // A pod waiting for a node agent that is down sits in Init with nothing else to
                // show why: say it once, in the container's log (`kubectl logs -c phantom-init`).
                if !told && matches!(server, Server::Agent { .. }) {
                    eprintln!(
                        "phantom-exec: waiting up to {wait:?} for {} on {} ({e}); {}",
                        server.describe(),
                        socket.display(),
                        server.what_to_check()
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
}

fn deadline_after(wait: Duration) -> Instant {
    // A wait beyond any real deadline (refused by `wait_from`) cannot overflow the clock either.
    Instant::now()
        .checked_add(wait.min(MAX_WAIT))
        .unwrap_or_else(Instant::now)
}

/// daemonset mode, in the init container: waits up to `wait` until the node agent answers
/// `GET /v1/healthz` on `socket` (any answer: the agent is up; what it serves this pod is asked
/// later, by the wrapped containers).
pub async fn wait_for_agent(socket: &Path, wait: Duration) -> Result<()> {
    let deadline = deadline_after(wait);
    let server = Server::Agent {
        token: SecretValue::new(String::new()),
    };
    loop {
        let stream = connect(socket, &server, wait, deadline).await?;
        let asked = tokio::time::timeout(ANSWER_TIMEOUT.min(wait), async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let request = hyper::Request::get("/v1/healthz")
                .header(hyper::header::HOST, "phantom-agent")
                .body(Empty::<bytes::Bytes>::new())
                .expect("a static request");
            sender.send_request(request).await
        })
        .await;
        match asked {
            Ok(Ok(_)) => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(Error::Delivery(format!(
                    "the Phantom node agent did not answer on {} within {wait:?}; this pod uses injection mode daemonset: check that phantom-agent runs on this node and its log",
                    socket.display()
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Asks the sidecar (or the node agent) at `socket` for `container`'s variables, waiting up to
/// `wait` for the socket to accept connections (the sidecar may still be fetching from OpenBao).
pub async fn fetch_env(
    socket: &Path,
    container: &str,
    server: &Server,
    wait: Duration,
) -> Result<BTreeMap<String, SecretValue>> {
    let deadline = deadline_after(wait);
    let stream = connect(socket, server, wait, deadline).await?;
    // The agent fetches from OpenBao when asked (the sidecar before it listens): it gets the
    // whole wait.
    let answer_timeout = match server {
        Server::Sidecar => ANSWER_TIMEOUT.min(wait),
        Server::Agent { .. } => wait.min(MAX_WAIT),
    };
    tokio::time::timeout(answer_timeout, ask(stream, container, server))
        .await
        .map_err(|_| {
            Error::Delivery(format!(
                "{} accepted the connection on {} but did not answer within {answer_timeout:?}; {}",
                server.describe(),
                socket.display(),
                server.what_to_check()
            ))
        })?
}

/// `GET /v1/env?container=<container>` on a connected socket.
async fn ask(
    stream: tokio::net::UnixStream,
    container: &str,
    server: &Server,
) -> Result<BTreeMap<String, SecretValue>> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::Delivery(format!("talking to {}: {e}", server.describe())))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(format!("/v1/env?container={container}"))
        .header(hyper::header::HOST, "phantom-proxy")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| Error::Delivery(e.to_string()))?;
    if let Server::Agent { token } = server {
        let value = phantom_openbao::secret::wiping_header(token)
            .ok_or_else(|| Error::Delivery("the agent token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert(phantom_crds::wellknown::injected::AGENT_TOKEN_HEADER, value);
    }
    let response = sender.send_request(request).await.map_err(|e| {
        Error::Delivery(format!(
            "asking {} for the environment: {e}",
            server.describe()
        ))
    })?;
    let status = response.status();
    let body = zeroize::Zeroizing::new(
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Delivery(format!("reading {}'s answer: {e}", server.describe())))?
            .to_bytes()
            .to_vec(),
    );
    if !status.is_success() {
        // Error answers carry a message, never values.
        return Err(Error::Delivery(format!(
            "{} refused the environment of container {container} ({status}): {}",
            server.describe(),
            String::from_utf8_lossy(&body)
                .chars()
                .take(500)
                .collect::<String>()
        )));
    }
    let answer: EnvAnswer = serde_json::from_slice(&body).map_err(|e| {
        Error::Delivery(format!(
            "{}'s answer is not {{\"env\": {{...}}}}: {e}",
            server.describe()
        ))
    })?;
    Ok(answer.env)
}

/// A command for `argv` with `env` added to the inherited environment. `exec` it
/// (`std::os::unix::process::CommandExt::exec`) to replace this process.
pub fn command(argv: &[OsString], env: &BTreeMap<String, SecretValue>) -> std::process::Command {
    let mut command = std::process::Command::new(&argv[0]);
    command.args(&argv[1..]);
    for (name, value) in env {
        command.env(name, value.expose());
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn wait_values_are_checked_not_guessed() {
        assert_eq!(wait_from(None).expect("default"), Duration::from_secs(120));
        assert_eq!(wait_from(Some("5")).expect("five"), Duration::from_secs(5));
        for bad in ["0", "-1", "soon", "", "18446744073709551615", "86401"] {
            let err = wait_from(Some(bad)).expect_err(bad).to_string();
            assert!(err.contains("PHANTOM_EXEC_WAIT_SECONDS"), "{bad}: {err}");
        }
    }

    #[test]
    fn arguments_are_parsed_strictly() {
        assert_eq!(
            parse(os(&[
                "--container",
                "app",
                "--",
                "/bin/web",
                "--port",
                "80"
            ]))
            .expect("run"),
            Invocation::Run {
                container: "app".into(),
                argv: os(&["/bin/web", "--port", "80"])
            }
        );
        assert_eq!(
            parse(os(&["install", "/phantom/bin/phantom-exec"])).expect("install"),
            Invocation::Install {
                dest: "/phantom/bin/phantom-exec".into(),
                layout: None,
                agent: None,
            }
        );
        assert_eq!(
            parse(os(&["install", "/b/x", "--volume", "/v", "app", "log"])).expect("install"),
            Invocation::Install {
                dest: "/b/x".into(),
                layout: Some(Layout {
                    volume: "/v".into(),
                    containers: vec!["app".into(), "log".into()],
                }),
                agent: None,
            }
        );
        assert_eq!(
            parse(os(&["install", "/b/x", "--agent", "/a/agent.sock"])).expect("install"),
            Invocation::Install {
                dest: "/b/x".into(),
                layout: None,
                agent: Some("/a/agent.sock".into()),
            }
        );
        assert!(parse(os(&["install", "/b/x", "--agent"])).is_err());
        assert!(parse(os(&["install", "/b/x", "--agent", "/a", "extra"])).is_err());
        assert!(parse(os(&["install", "/b/x", "--volume", "/v", "../etc"])).is_err());
        assert!(parse(os(&["install", "/b/x", "--other"])).is_err());
        for bad in [
            &[][..],
            &["--container", "app"],
            &["--container", "app", "--"],
            &["--container", "", "--", "x"],
            &["install"],
        ] {
            let err = parse(os(bad)).expect_err("refused");
            assert!(
                err.to_string().contains("usage") || err.to_string().contains("no command"),
                "{bad:?}: {err}"
            );
        }
    }
}
