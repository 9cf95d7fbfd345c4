//! `phantom-exec`: sets the container's secrets as environment variables and `exec`s the
//! application (see `phantom_runtime_proxy::exec`). Exit codes: 127 when the command cannot be
//! executed, 70 when the sidecar cannot deliver, 64 for bad arguments.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use phantom_runtime_proxy::exec::{
    Invocation, Server, command, fetch_env, install, parse, wait_for_agent, wait_from,
};
use phantom_runtime_proxy::harden::disable_core_dumps;

fn main() -> ExitCode {
    let invocation = match parse(std::env::args_os().skip(1).collect()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("phantom-exec: {e}");
            return ExitCode::from(64);
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{}", phantom_runtime_proxy::exec::HELP);
            ExitCode::SUCCESS
        }
        Invocation::Install {
            dest,
            layout,
            agent,
        } => {
            if let Err(e) =
                install(&dest).and_then(|()| layout.as_ref().map_or(Ok(()), |l| l.create()))
            {
                eprintln!("phantom-exec: {e}");
                return ExitCode::from(70);
            }
            let Some(socket) = agent else {
                return ExitCode::SUCCESS;
            };
            let waited = wait_from(std::env::var("PHANTOM_EXEC_WAIT_SECONDS").ok().as_deref())
                .and_then(|wait| runtime()?.block_on(wait_for_agent(&socket, wait)));
            match waited {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("phantom-exec: {e}");
                    ExitCode::from(70)
                }
            }
        }
        Invocation::Run { container, argv } => {
            // Before any secret is in this process, and kept across exec: no core file of the
            // application, whose environ holds the secrets, even where suid_dumpable=2 would
            // write one.
            if !disable_core_dumps() {
                eprintln!(
                    "phantom-exec: cannot switch core dumps off (RLIMIT_CORE); refusing to hand secrets to a process that may dump them"
                );
                return ExitCode::from(70);
            }
            let socket = PathBuf::from(
                std::env::var_os("PHANTOM_SOCKET")
                    .unwrap_or_else(|| phantom_crds::wellknown::injected::SOCKET_PATH.into()),
            );
            let wait = match wait_from(std::env::var("PHANTOM_EXEC_WAIT_SECONDS").ok().as_deref()) {
                Ok(wait) => wait,
                Err(e) => {
                    eprintln!("phantom-exec: {e}");
                    return ExitCode::from(64);
                }
            };
            let agent_token = std::env::var_os(phantom_crds::wellknown::injected::AGENT_TOKEN_ENV)
                .map(PathBuf::from);
            let fetched = Server::from_env(agent_token.as_deref()).and_then(|server| {
                runtime()?.block_on(fetch_env(&socket, &container, &server, wait))
            });
            let env = match fetched {
                Ok(env) => env,
                Err(e) => {
                    eprintln!("phantom-exec: {e}");
                    return ExitCode::from(70);
                }
            };
            let names: Vec<&str> = env.keys().map(String::as_str).collect();
            eprintln!(
                "phantom-exec: container {container}: {} variable(s) from Phantom ({})",
                names.len(),
                names.join(", ")
            );
            // Only returns on failure; on success the application replaces this process.
            let err = command(&argv, &env).exec();
            eprintln!("phantom-exec: cannot execute {:?}: {err}", argv[0]);
            ExitCode::from(127)
        }
    }
}

fn runtime() -> phantom_runtime_proxy::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| phantom_runtime_proxy::Error::Delivery(format!("starting: {e}")))
}
