//! The split deployment's settings: `bankgraph gateway` (the public listener, calling the
//! identity service) and `bankgraph identity` (the identity service and its RPC listener), and
//! how the two trust each other (service token, mutual TLS).

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::settings::given;
use super::{
    ConfigError, GatewayConfig, GatewaySettings, IdentityConfig, IdentitySettings, MISSING_TOKEN_KEY, REAL_PLAID_NEEDS,
    RpcAuthSettings, bad, dev_secrets, dev_secrets_path, nonempty,
};

/// `bankgraph identity`: the identity service and the RPC listener gateways call.
#[derive(Debug, Clone)]
pub struct SplitIdentityConfig {
    pub identity: IdentityConfig,
    pub rpc: RpcServerConfig,
}

/// `bankgraph gateway`: the public gateway, calling the identity service.
#[derive(Debug, Clone)]
pub struct SplitGatewayConfig {
    pub gateway: GatewayConfig,
    /// Metrics and health.
    pub internal: SocketAddr,
    pub rpc: RpcClientConfig,
}

/// Mutual TLS between gateway and identity service: this side's certificate and key, and the
/// CA that signs the other side's.
#[derive(Clone)]
pub struct RpcTls {
    pub cert_pem: String,
    pub key_pem: SecretString,
    pub ca_pem: String,
}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcTls { cert, key: [redacted], ca }")
    }
}

/// The identity service's RPC listener.
#[derive(Debug, Clone)]
pub struct RpcServerConfig {
    pub bind: SocketAddr,
    /// Every call must present it (none: only on a loopback address).
    pub token: Option<SecretString>,
    pub tls: Option<RpcTls>,
}

/// How the gateway reaches the identity service.
#[derive(Debug, Clone)]
pub struct RpcClientConfig {
    pub endpoints: Vec<Url>,
    pub token: Option<SecretString>,
    pub tls: Option<RpcTls>,
}

/// The variables a gateway refuses to start with: what it would not use, and whose presence on
/// the internet-facing host is the risk the split deployment removes.
pub fn identity_only_variable(name: &str) -> bool {
    matches!(
        name,
        "DATABASE_URL" | "TOKEN_ENCRYPTION_KEY" | "TOKEN_ENCRYPTION_PREVIOUS_KEYS" | "TOKEN_ENCRYPTION_KEY_ID"
    ) || name.starts_with("PLAID_")
}

impl GatewaySettings {
    /// Resolves `bankgraph gateway`'s settings. `env` is the process environment: a gateway
    /// with any identity-only variable set (see [`identity_only_variable`]) refuses to start.
    pub fn resolve(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<SplitGatewayConfig, ConfigError> {
        let mut found: Vec<String> = env
            .into_iter()
            .filter(|(k, v)| identity_only_variable(k) && !v.trim().is_empty())
            .map(|(k, _)| k)
            .collect();
        if !found.is_empty() {
            found.sort();
            return Err(ConfigError(format!(
                "{} must not be set for bankgraph gateway: only the identity service uses them, and the \
                 internet-facing host must not hold them",
                found.join(", ")
            )));
        }
        if self.public.explicit_jwt_keys()?.is_empty() {
            return Err(ConfigError(
                "bankgraph gateway needs one of JWT_SECRET, JWT_PUBLIC_KEY_PEM or JWKS_URL".into(),
            ));
        }
        let urls = nonempty(&self.client.identity_url).ok_or_else(|| {
            bad("IDENTITY_URL", "must be set: the identity service's address, e.g. http://127.0.0.1:8003")
        })?;
        let tls = self.auth.tls()?;
        let mut endpoints = Vec::new();
        for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let url =
                Url::parse(u).map_err(|_| bad("IDENTITY_URL", format!("has an entry that is not a URL: {u:?}")))?;
            let want = if tls.is_some() { "https" } else { "http" };
            if url.scheme() != want || url.host_str().is_none() || url.path() != "/" {
                return Err(bad(
                    "IDENTITY_URL",
                    format!(
                        "must list {want}://host:port endpoints{}, got {u:?}",
                        if tls.is_some() { " (IDENTITY_TLS_* is set)" } else { "" }
                    ),
                ));
            }
            endpoints.push(url);
        }
        Ok(SplitGatewayConfig {
            internal: self.listener.internal_bind_addr,
            gateway: self.public.gateway(&self.listener, &None, false)?,
            rpc: RpcClientConfig { endpoints, token: self.auth.token()?, tls },
        })
    }
}

impl IdentitySettings {
    /// Resolves `bankgraph identity`'s settings.
    pub fn resolve(&self) -> Result<SplitIdentityConfig, ConfigError> {
        let real_plaid = self.store.real_plaid()?;
        let token_key = given(&self.store.token_encryption_key);
        if real_plaid && token_key.is_none() {
            return Err(ConfigError(format!("{REAL_PLAID_NEEDS}: {MISSING_TOKEN_KEY}")));
        }
        let dev_path = dev_secrets_path(&self.store.database_url);
        let dev = if token_key.is_none() { Some(dev_secrets::load_or_create_dev_secrets(&dev_path)?) } else { None };
        let token = self.auth.token()?;
        let bind = self.server.identity_bind_addr;
        if token.is_none() && !bind.ip().is_loopback() {
            return Err(bad(
                "IDENTITY_SERVICE_TOKEN",
                format!("must be set when IDENTITY_BIND_ADDR ({bind}) is not a loopback address"),
            ));
        }
        Ok(SplitIdentityConfig {
            identity: self.store.identity(&self.listener, real_plaid, &dev, dev.is_some().then_some(dev_path))?,
            rpc: RpcServerConfig { bind, token, tls: self.auth.tls()? },
        })
    }
}

impl RpcAuthSettings {
    fn token(&self) -> Result<Option<SecretString>, ConfigError> {
        match given(&self.identity_service_token) {
            None => Ok(None),
            Some(t) if t.chars().count() < 32 => Err(bad("IDENTITY_SERVICE_TOKEN", "must be at least 32 characters")),
            Some(t) => Ok(Some(SecretString::from(t.to_string()))),
        }
    }

    fn tls(&self) -> Result<Option<RpcTls>, ConfigError> {
        let read = |var: &str, path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| bad(var, format!("cannot be read ({}): {e}", path.display())))
        };
        match (&self.identity_tls_cert, &self.identity_tls_key, &self.identity_tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                let tls = RpcTls {
                    cert_pem: read("IDENTITY_TLS_CERT", cert)?,
                    key_pem: SecretString::from(read("IDENTITY_TLS_KEY", key)?),
                    ca_pem: read("IDENTITY_TLS_CA", ca)?,
                };
                for (var, pem) in [
                    ("IDENTITY_TLS_CERT", &tls.cert_pem),
                    ("IDENTITY_TLS_KEY", &tls.key_pem.expose_secret().to_string()),
                    ("IDENTITY_TLS_CA", &tls.ca_pem),
                ] {
                    if !pem.contains("-----BEGIN") {
                        return Err(bad(var, "is not a PEM file"));
                    }
                }
                Ok(Some(tls))
            }
            _ => {
                Err(ConfigError("IDENTITY_TLS_CERT, IDENTITY_TLS_KEY and IDENTITY_TLS_CA must be set together".into()))
            }
        }
    }
}
