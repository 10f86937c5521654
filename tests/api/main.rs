//! The public contract over real HTTP, against the emulator, on SQLite (default) or
//! PostgreSQL (`TEST_DATABASE_URL=postgres://…`): every test gets its own database.
#![allow(clippy::unwrap_used)]

mod auth;
mod clients;
mod completion;
mod custody;
mod durability;
mod events;
mod flows;
mod fuzz;
mod hardening;
mod helpers;
mod hostile;
mod input;
mod isolation;
mod jobs;
mod leaks;
mod link_web;
mod operations;
mod round_trips;
mod slow_readers;
mod split;
mod split_batch;
mod split_processes;
mod status_rule;
mod store;
mod sync_replay;
mod webhook_keys;
mod webhooks;
