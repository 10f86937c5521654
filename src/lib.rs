//! bankgraph: a GraphQL gateway that lets apps link bank accounts through Plaid without ever
//! holding a Plaid secret or access token, and the offline Plaid emulator it is tested against.
//!
//! A request flows down, never back up:
//! - [`http`]: axum routers (public GraphQL listener, internal listener).
//! - [`auth`]: Bearer JWT verification and the caller.
//! - [`graphql`]: the schema, its types and resolvers.
//! - [`identity`]: the identity service (the system of record) and its store.
//! - [`rpc`]: the identity service over gRPC, for the split deployment (server and client).
//! - [`plaid`]: the typed Plaid client, wire shapes, errors, webhook verification.
//! - [`domain`]: statuses, models, address validation.
//! - [`db`]: SQLite / PostgreSQL pools and migrations.
//! - [`jobs`]: durable background work in the database.
//! - [`metrics`]: Prometheus metrics; [`ratelimit`]: per-IP and per-caller limits.
//! - [`emulator`]: the offline Plaid Sandbox emulator (`bankgraph plaid-emulator`).
//! - `batch`: concurrent reads coalesced into one call (statements, identity RPCs).
//! - [`config`], [`app`], [`cli`], [`telemetry`], [`trace`], [`error`]: wiring.

pub mod admission;
pub mod app;
pub mod auth;
pub(crate) mod batch;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod emulator;
pub mod error;
pub mod graphql;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub mod plaid;
pub mod ratelimit;
pub mod rpc;
pub mod telemetry;
pub mod trace;
