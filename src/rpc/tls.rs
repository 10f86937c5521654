//! Mutual TLS between gateway and identity service (rustls): each side presents its own
//! certificate and accepts only the other's signed by the configured CA.

use secrecy::ExposeSecret;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::RpcTls;

/// The identity service's side: its certificate, and client certificates required.
pub fn server(tls: &RpcTls) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, tls.key_pem.expose_secret()))
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .client_auth_optional(false)
}

/// The gateway's side: the service's certificate must be signed by the CA and name the host
/// of the endpoint URL.
pub fn client(tls: &RpcTls) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, tls.key_pem.expose_secret()))
}
