//! A real `bankgraph serve` process (the test binary's own build) on ports it picks.

use base64::Engine;

use super::queries::JWT_SECRET;

/// A real `bankgraph serve` process (the test binary's own build) on ports it picks, against a
/// test's database and emulator; its GraphQL URL is read from its banner. Rate limits are off.
pub struct Server {
    child: Option<std::process::Child>,
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
        Server { child: Some(child), graphql }
    }

    /// SIGKILL: no shutdown hook, no flush, nothing finished.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
