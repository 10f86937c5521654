//! A real `bankgraph serve` process (the test binary's own build) on ports it picks.

use base64::Engine;

use super::app::SERVICE_TOKEN;
use super::queries::JWT_SECRET;

/// A child process that is killed when dropped.
pub struct Running(Option<std::process::Child>);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown hook, no flush, nothing finished.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("running");
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real `bankgraph serve` process (the test binary's own build) on ports it picks, against a
/// test's database and emulator; its GraphQL URL is read from its banner. Rate limits are off.
pub struct Server {
    child: Running,
    pub graphql: String,
}

impl Server {
    pub fn start(database_url: &str, plaid_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(database_url, plaid_url, extra, env, None)
    }

    /// The same, logging at `info` into the file `log`, as a deployment would keep its log.
    pub fn start_logged(
        database_url: &str,
        plaid_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Server {
        Self::spawn(database_url, plaid_url, extra, env, Some(log))
    }

    fn spawn(
        database_url: &str,
        plaid_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Server {
        use std::io::{BufRead, BufReader};
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bankgraph"));
        cmd.args([
            "serve",
            "--bind-addr=127.0.0.1:0",
            "--internal-bind-addr=127.0.0.1:0",
            &format!("--database-url={database_url}"),
            &format!("--jwt-secret={JWT_SECRET}"),
            &format!("--token-encryption-key={key}"),
            "--plaid-client-id=emulator_client_id",
            "--plaid-secret=emulator_sandbox_secret",
            &format!("--plaid-base-url={plaid_url}"),
            "--rate-limit-per-ip=0",
            "--rate-limit-per-user=0",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped());
        match log {
            Some(path) => cmd.env("RUST_LOG", "info").stderr(std::fs::File::create(path).expect("log file")),
            None => cmd.env("RUST_LOG", "warn").stderr(std::process::Stdio::null()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bankgraph starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let graphql = loop {
            let line = lines.next().expect("banner").unwrap();
            if let Some(url) = line.split("GraphQL and GraphiQL: ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child: Running(Some(child)), graphql }
    }

    pub fn kill(&mut self) {
        self.child.kill()
    }

    pub async fn terminate(self) -> std::process::ExitStatus {
        self.child.terminate().await
    }
}

/// A `bankgraph` process started with exactly the given arguments and environment (nothing
/// inherited but `PATH`), logging at `info` into `log`; `banner` names the banner lines whose
/// values the test needs (the text after each label), read from stdout before it returns.
pub struct Process {
    pub child: Running,
    pub values: Vec<String>,
}

impl Process {
    pub fn start(args: &[&str], env: &[(&str, &str)], log: &std::path::Path, banner: &[&str]) -> Process {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bankgraph"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("bankgraph starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut values = Vec::new();
        for label in banner {
            let value = loop {
                let line = lines.next().unwrap_or_else(|| panic!("no {label} in the banner")).unwrap();
                if let Some(v) = line.split(label).nth(1) {
                    break v.split_whitespace().next().unwrap_or_default().to_string();
                }
            };
            values.push(value);
        }
        std::thread::spawn(move || for _ in lines {});
        Process { child: Running(Some(child)), values }
    }
}

/// What `bankgraph <args>` says on stderr when it refuses to start, and its exit code.
pub fn refusal(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bankgraph"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child =
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("bankgraph runs");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("bankgraph {args:?} started instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// `bankgraph identity` on `database_url` against the Plaid at `plaid_url`, sealing tokens with
/// `key` (base64), logging into `log`. `values[0]` is its RPC address.
pub fn identity_process(database_url: &str, plaid_url: &str, key: &str, log: &std::path::Path) -> Process {
    Process::start(
        &["identity"],
        &[
            ("IDENTITY_BIND_ADDR", "127.0.0.1:0"),
            ("INTERNAL_BIND_ADDR", "127.0.0.1:0"),
            ("IDENTITY_SERVICE_TOKEN", SERVICE_TOKEN),
            ("DATABASE_URL", database_url),
            ("TOKEN_ENCRYPTION_KEY", key),
            ("PLAID_CLIENT_ID", bankgraph::emulator::DEFAULT_CLIENT_ID),
            ("PLAID_SECRET", bankgraph::emulator::DEFAULT_SECRET),
            ("PLAID_BASE_URL", plaid_url),
        ],
        log,
        &["identity RPC:"],
    )
}

/// `bankgraph gateway` in front of the identity service at `identity_rpc` (`host:port`), with
/// no rate limits, logging into `log`. `values[0]` is its GraphQL URL.
pub fn gateway_process(identity_rpc: &str, log: &std::path::Path) -> Process {
    let url = format!("http://{identity_rpc}");
    Process::start(
        &["gateway"],
        &[
            ("BIND_ADDR", "127.0.0.1:0"),
            ("INTERNAL_BIND_ADDR", "127.0.0.1:0"),
            ("JWT_SECRET", JWT_SECRET),
            ("IDENTITY_URL", &url),
            ("IDENTITY_SERVICE_TOKEN", SERVICE_TOKEN),
            ("RATE_LIMIT_PER_IP", "0"),
            ("RATE_LIMIT_PER_USER", "0"),
            ("RATE_LIMIT_SENSITIVE_PER_MINUTE", "0"),
        ],
        log,
        &["GraphQL and GraphiQL: "],
    )
}
