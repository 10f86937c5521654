//! Mutual TLS between gateway and identity service (rustls): each side presents its own
//! certificate and accepts only the other's signed by the configured CA.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::RpcTls;

/// The identity service's side: its certificate, and client certificates required.
pub fn server(tls: &RpcTls) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, tls.key_pem.expose_secret()))
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .client_auth_optional(false)
}

fn builder() -> anyhow::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?)
}

/// The gateway's side: the service's certificate must be signed by the CA and name the host
/// of the endpoint URL; the gateway presents its own.
pub fn client_config(tls: &RpcTls) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| anyhow::anyhow!("IDENTITY_TLS_CA: {e}"))?)?;
    }
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("IDENTITY_TLS_CERT: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.expose_secret().as_bytes())
        .map_err(|_| anyhow::anyhow!("IDENTITY_TLS_KEY is not a PEM private key"))?;
    Ok(builder()?.with_root_certificates(roots).with_client_auth_cert(certs, key)?)
}

/// For plain-HTTP endpoints (no `IDENTITY_TLS_*`): a configuration that is never used, since
/// the connector then speaks TLS to no one.
pub fn no_tls_config() -> anyhow::Result<rustls::ClientConfig> {
    Ok(builder()?.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
}
