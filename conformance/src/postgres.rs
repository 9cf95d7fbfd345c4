//! A throwaway PostgreSQL for OpenBao's database engine: the real thing that issues dynamic
//! credentials with leases. PostgreSQL refuses to run as root, so as root it runs as the
//! `postgres` user the Debian package creates, from a data directory that user owns.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::env::free_port;
use crate::process::{ManagedProcess, running_as_root};
use crate::{Env, Error, Result, wait};

/// The superuser OpenBao manages roles with.
const ADMIN: &str = "openbao";

/// A running PostgreSQL on loopback; stopped (and its data removed) on drop.
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: tempfile::TempDir,
    _process: ManagedProcess,
}

/// uid and gid of the `postgres` user (from /etc/passwd).
fn postgres_user() -> Option<(u32, u32)> {
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .and_then(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
}

/// `program`, as the `postgres` user when this process is root (set directly on the child, so
/// stopping it stops PostgreSQL itself, not a wrapper).
fn as_database_user(program: PathBuf) -> Result<Command> {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    if running_as_root() {
        let (uid, gid) = postgres_user().ok_or_else(|| {
            Error::io("finding the postgres user")(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no postgres user in /etc/passwd: install postgresql-15",
            ))
        })?;
        command.uid(uid).gid(gid);
    }
    Ok(command)
}

impl Postgres {
    /// `postgresql://openbao:…@127.0.0.1:PORT/postgres`, with OpenBao's template for the
    /// credentials it manages.
    pub fn openbao_connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The superuser's name and password (OpenBao's database config takes them).
    pub fn admin(&self) -> (&'static str, &'static str) {
        (ADMIN, "phantom-test-only")
    }

    /// Whether `user`/`password` can log in and run a query (through `psql`; the password goes
    /// in the environment, never on a command line).
    pub fn can_log_in(&self, user: &str, password: &str) -> Result<bool> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "postgres",
                "-w",
                "-tAc",
                "select 1",
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .map_err(Error::io("running psql"))?;
        Ok(out.status.success())
    }

    /// The data directory (for its log, on failures).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }
}

impl Env {
    /// Starts PostgreSQL with a password-protected superuser for OpenBao; takes a few seconds.
    pub async fn start_postgres(&self) -> Result<Postgres> {
        let bin = self.tools().postgres_bin.clone();
        // Outside the environment's directory: the `postgres` user must be able to reach it.
        let data = tempfile::Builder::new()
            .prefix("phantom-pg-")
            .tempdir()
            .map_err(Error::io("creating PostgreSQL's data directory"))?;
        let pgdata = data.path().join("data");
        let password_file = data.path().join("pwfile");
        std::fs::write(&password_file, "phantom-test-only\n")
            .map_err(Error::io("writing PostgreSQL's password file"))?;
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(data.path());
            crate::process::run_checked(&mut chown, "chown of PostgreSQL's data directory")?;
        }
        let init = as_database_user(bin.join("initdb"))?
            .arg("-D")
            .arg(&pgdata)
            .args(["-U", ADMIN, "-A", "scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .map_err(Error::io("running initdb"))?;
        if !init.status.success() {
            return Err(Error::Command {
                command: "initdb".into(),
                status: init.status,
                stderr: String::from_utf8_lossy(&init.stderr).into_owned(),
            });
        }
        let port = free_port()?;
        let mut server = as_database_user(bin.join("postgres"))?;
        server
            .arg("-D")
            .arg(&pgdata)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(data.path())
            .args(["-c", "fsync=off"]);
        let process = std::sync::Mutex::new(ManagedProcess::spawn("postgres", server, self.dir())?);
        let postgres_bin = bin.clone();
        wait::until_guarded(
            "PostgreSQL accepting connections",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || process.lock().expect("process").check_alive(),
            || {
                let ready = Command::new(postgres_bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                async move { Ok::<_, Error>(ready.then_some(())) }
            },
        )
        .await?;
        Ok(Postgres {
            port,
            bin,
            data,
            _process: process.into_inner().expect("process"),
        })
    }
}
