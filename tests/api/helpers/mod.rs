//! Test helpers, by concern: `app` (a `TestApp`: bankgraph on port 0 against its own emulator
//! and database, and its database), `calls` (GraphQL, the emulator, linking, waiting),
//! `queries` (the contract's documents and tokens), `server` (a real `bankgraph serve`
//! process), `logs` (what every test logged and received, for the leak tests).

mod app;
mod calls;
mod logs;
mod queries;
mod server;
mod ws;

pub use app::*;
pub use logs::*;
pub use queries::*;
pub use server::*;
pub use ws::*;
