//! The public GraphQL contract (`schema.graphql`): types named as in the contract, every Plaid
//! operation behind the `MANAGE_PAYMENT` guard, input checked before the identity service is
//! called. Resolvers only translate; the identity service decides.
//!
//! By kind: `gateway` (the schema behind the guardrails), `guards`, `scalars`, `types`
//! (outputs and enums), `inputs`, `query`, `mutation`, `error` (the GraphQL form of `AppError`).

mod error;
mod gateway;
pub mod guardrails;
mod guards;
mod inputs;
mod mutation;
mod query;
mod scalars;
mod types;

use async_graphql::{EmptySubscription, Schema};

pub use gateway::{Executed, Gateway, Method};
pub use mutation::Mutation;
pub use query::Query;
pub use scalars::DateTime;

pub type BankgraphSchema = Schema<Query, Mutation, EmptySubscription>;

/// The SDL of the schema, as `bankgraph schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription).finish().sdl()
}

type GqlResult<T> = async_graphql::Result<T>;

/// What a Plaid field costs in the complexity limit: it reads the database or calls Plaid,
/// so aliasing it many times must hit the limit long before cheap fields do.
const PLAID_FIELD_COST: usize = 10;
