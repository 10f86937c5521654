//! The identity service over gRPC, for the split deployment: `bankgraph identity` serves
//! [`IdentityService`](crate::identity::IdentityService) on its RPC listener ([`server`]), and
//! `bankgraph gateway` implements the same trait by calling it ([`client`]), so the GraphQL
//! layer does not know which one it has. The contract is `proto/bankgraph/identity/v1`;
//! [`convert`] maps it to the domain, [`status`] carries errors across without losing what a
//! client sees.

pub mod client;
pub mod convert;
pub mod server;
mod status;
pub mod tls;

/// The generated messages and stubs of `proto/bankgraph/identity/v1/identity.proto`.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("bankgraph.identity.v1");
}

pub use client::RemoteIdentity;
pub use server::{RpcServer, ServiceToken};

/// Largest message either side accepts: a page of transactions is at most 500 rows of about
/// 300 bytes; 4 MiB leaves room and bounds what one call can make the other allocate.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
