//! bankgraph: a GraphQL gateway that lets apps link bank accounts through Plaid without ever
//! holding a Plaid secret or access token, and the offline Plaid emulator it is tested against.
//!
//! Where things live:
//! - [`plaid`]: the typed Plaid client, wire shapes, errors, webhook verification.
//! - [`emulator`]: the offline Plaid Sandbox emulator (`bankgraph plaid-emulator`).
//! - [`cli`]: the command line.
//! - [`telemetry`]: logging set-up.

pub mod cli;
pub mod emulator;
pub mod plaid;
pub mod telemetry;
