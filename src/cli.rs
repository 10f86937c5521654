//! The command line: `serve` (the default), `gateway` and `identity` (the same two rooms as
//! separate services), `schema`, `token`, `migrate`, `plaid-emulator`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use secrecy::ExposeSecret;

use crate::app::{App, GatewayApp, IdentityApp};
use crate::config::{GatewaySettings, IdentitySettings, JwtKey, LogFormat, Settings, otlp_endpoint};
use crate::emulator::{self, EmulatorConfig, RunningEmulator};

#[derive(Debug, Parser)]
#[command(name = "bankgraph", version, about = "A GraphQL gateway for linking bank accounts through Plaid")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Log as text or as JSON lines.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// OTLP/HTTP collector to export spans to, e.g. http://127.0.0.1:4318 (none: no export).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true, value_parser = otlp_endpoint)]
    pub otlp_endpoint: Option<String>,
    /// The service name spans carry.
    #[arg(long, env = "OTEL_SERVICE_NAME", global = true, default_value = "bankgraph")]
    pub otel_service_name: String,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of `serve`, which is what a bare `bankgraph` runs.
    #[command(flatten)]
    pub serve: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the identity service in one process (the default).
    Serve(Settings),
    /// Run the public gateway alone, calling the identity service at IDENTITY_URL. Holds no
    /// Plaid secret, access token, encryption key or database credential.
    Gateway(GatewaySettings),
    /// Run the identity service alone: database, Plaid, token custody, webhooks, and the RPC
    /// listener (IDENTITY_BIND_ADDR) that gateways call.
    Identity(IdentitySettings),
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Mint a caller token with the configured HS256 secret, for local use.
    Token(TokenArgs),
    /// Apply database migrations and exit (`serve` applies them too).
    Migrate(Settings),
    /// Run the offline Plaid emulator (Plaid's Sandbox API, signed webhooks, faults on demand).
    PlaidEmulator(EmulatorArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The caller (JWT `sub`).
    #[arg(long)]
    pub sub: String,
    /// Space-separated scopes.
    #[arg(long, default_value = crate::auth::MANAGE_PAYMENT)]
    pub scope: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, env = "PLAID_EMULATOR_ADDR", default_value = "127.0.0.1:8100")]
    pub addr: SocketAddr,
    /// The client_id the emulator accepts.
    #[arg(long, env = "PLAID_EMULATOR_CLIENT_ID", default_value = emulator::DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// The secret the emulator accepts.
    #[arg(long, env = "PLAID_EMULATOR_SECRET", default_value = emulator::DEFAULT_SECRET, hide_default_value = false)]
    pub secret: String,
    /// Proxy mode: the Fuse-Client-Id required under /v1/plaid.
    #[arg(long, env = "PLAID_EMULATOR_PROXY_CLIENT_ID", default_value = emulator::DEFAULT_PROXY_CLIENT_ID)]
    pub proxy_client_id: String,
    /// Proxy mode: the Fuse-Api-Key required under /v1/plaid.
    #[arg(long, env = "PLAID_EMULATOR_PROXY_API_KEY", default_value = emulator::DEFAULT_PROXY_API_KEY)]
    pub proxy_api_key: String,
    /// Seed of all generated data: the same seed gives the same items, accounts and history.
    #[arg(long, env = "PLAID_EMULATOR_SEED", default_value_t = 20_200_914)]
    pub seed: u64,
    /// Transactions generated per new item, over 24 months (user_custom may override per item).
    #[arg(long, env = "PLAID_EMULATOR_TRANSACTIONS_PER_ITEM", default_value_t = 1_500)]
    pub transactions_per_item: usize,
    /// Seconds between webhook delivery retries (Plaid retries twice, minutes apart).
    #[arg(long, env = "PLAID_EMULATOR_WEBHOOK_RETRY_SECONDS", default_value_t = 5.0)]
    pub webhook_retry_seconds: f64,
    /// Comma-separated OAuth redirect URIs registered for the client (any other redirect_uri is
    /// INVALID_FIELD, as at Plaid); default: the demo's and the tests'.
    #[arg(long, env = "PLAID_EMULATOR_REDIRECT_URIS", value_delimiter = ',')]
    pub redirect_uris: Vec<String>,
    /// Serve on a non-loopback --addr (the control API still answers loopback peers only).
    #[arg(long, env = "EMULATOR_ALLOW_REMOTE", default_value = "false", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_remote: bool,
}

impl EmulatorArgs {
    pub fn config(&self) -> anyhow::Result<EmulatorConfig> {
        anyhow::ensure!(
            self.webhook_retry_seconds.is_finite() && (0.0..=3600.0).contains(&self.webhook_retry_seconds),
            "PLAID_EMULATOR_WEBHOOK_RETRY_SECONDS must be between 0 and 3600"
        );
        anyhow::ensure!(
            self.transactions_per_item <= 1_000_000,
            "PLAID_EMULATOR_TRANSACTIONS_PER_ITEM must be at most 1000000"
        );
        crate::emulator::check_bind(self.addr, self.allow_remote).map_err(anyhow::Error::msg)?;
        let mut cfg = EmulatorConfig {
            client_id: self.client_id.clone(),
            secret: self.secret.clone(),
            proxy_client_id: self.proxy_client_id.clone(),
            proxy_api_key: self.proxy_api_key.clone(),
            seed: self.seed,
            transactions_per_item: self.transactions_per_item,
            ..EmulatorConfig::default()
        };
        cfg.webhook_policy.retry_delay = Duration::from_secs_f64(self.webhook_retry_seconds);
        let registered: Vec<String> =
            self.redirect_uris.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        if !registered.is_empty() {
            cfg.redirect_uris = registered;
        }
        Ok(cfg)
    }
}

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(settings)) => serve(settings).await,
        Some(Command::Gateway(settings)) => {
            let app = GatewayApp::build(settings.resolve(std::env::vars())?).await?;
            println!("{}", app.banner());
            app.run(shutdown_signal()).await?;
            tracing::info!("bankgraph gateway stopped");
            Ok(())
        }
        Some(Command::Identity(settings)) => {
            let app = IdentityApp::build(settings.resolve()?).await?;
            println!("{}", app.banner());
            app.run(shutdown_signal()).await?;
            tracing::info!("bankgraph identity stopped");
            Ok(())
        }
        Some(Command::Schema) => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Some(Command::Migrate(settings)) => {
            let config = settings.resolve()?;
            let db = crate::db::Db::connect(config.identity.db.url.expose()).await?;
            db.migrate().await?;
            println!("migrations applied to {}", config.identity.db.url);
            Ok(())
        }
        Some(Command::Token(args)) => {
            anyhow::ensure!(!args.sub.trim().is_empty(), "--sub must not be empty");
            anyhow::ensure!(args.ttl > 0 && args.ttl <= 31 * 24 * 3600, "--ttl must be 1 second to 31 days");
            let config = args.settings.resolve()?;
            if let Some(max) = config.gateway.auth.max_lifetime {
                anyhow::ensure!(
                    args.ttl <= max.as_secs(),
                    "--ttl must be at most {} s (JWT_MAX_LIFETIME_SECONDS), or the server refuses the token",
                    max.as_secs()
                );
            }
            let JwtKey::Secret(secret) = &config.gateway.auth.key else {
                anyhow::bail!("bankgraph token needs an HS256 secret (JWT_SECRET or the development secret)");
            };
            let token = crate::auth::mint_hs256(
                secret.expose_secret().as_bytes(),
                &args.sub,
                &args.scope,
                Duration::from_secs(args.ttl),
                config.gateway.auth.issuer.as_deref(),
                config.gateway.auth.audience.as_deref(),
            )?;
            println!("{token}");
            Ok(())
        }
        Some(Command::PlaidEmulator(args)) => {
            let running = RunningEmulator::start(args.config()?, args.addr).await?;
            // Printed on stdout so scripts and tests can read the bound port.
            println!("plaid emulator listening on {}", running.url());
            tracing::info!(url = %running.url(), "plaid emulator started");
            tokio::select! {
                _ = shutdown_signal() => tracing::info!("plaid emulator stopping"),
                _ = running.wait() => {}
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let config = settings.resolve()?;
    let app = App::build(config).await?;
    println!("{}", app.banner());
    app.run(shutdown_signal()).await?;
    tracing::info!("bankgraph stopped");
    Ok(())
}
