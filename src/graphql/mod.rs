//! The public GraphQL contract (`schema.graphql`): types named as in the contract, every Plaid
//! operation behind the `MANAGE_PAYMENT` guard, input checked before the identity service is
//! called. Resolvers only translate; the identity service decides.
//!
//! By kind: `gateway` (the schema behind the guardrails), `guards`, `scalars`, `types`
//! (outputs and enums), `flat` (the hot lists, resolved without a future per field), `inputs`,
//! `query`, `mutation`, `error` (the GraphQL form of `AppError`).

mod cursor;
mod directives;
mod document;
mod error;
mod flat;
mod gateway;
pub mod guardrails;
mod guards;
mod inputs;
mod mutation;
mod nesting;
mod persisted;
mod query;
mod scalars;
mod subscription;
mod types;
mod variable_types;

use async_graphql::Schema;

pub use gateway::{Executed, Gateway, Method};
pub use mutation::Mutation;
pub use query::Query;
pub use scalars::DateTime;
pub use subscription::Subscription;

pub type BankgraphSchema = Schema<Query, Mutation, Subscription>;

/// The SDL of the schema, as `bankgraph schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    let options = async_graphql::SDLExportOptions::new().include_specified_by();
    Schema::build(Query, Mutation, Subscription).finish().sdl_with_options(options)
}

type GqlResult<T> = async_graphql::Result<T>;

/// What a Plaid field costs in the complexity limit: it reads the database or calls Plaid,
/// so aliasing it many times must hit the limit long before cheap fields do.
const PLAID_FIELD_COST: usize = 10;

#[cfg(test)]
mod tests {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

    /// Every type, field, argument, input field and enum value of the contract says what it is,
    /// and every custom scalar where its format is specified: a new one without fails here.
    #[test]
    fn every_part_of_the_schema_is_described() {
        let sdl = super::sdl();
        let doc = async_graphql::parser::parse_schema(&sdl).unwrap();
        let mut missing = Vec::new();
        let described = |d: &Option<async_graphql::parser::Positioned<String>>| {
            d.as_ref().is_some_and(|d| !d.node.trim().is_empty())
        };
        for def in &doc.definitions {
            let TypeSystemDefinition::Type(t) = def else { continue };
            let t = &t.node;
            let name = t.name.node.as_str();
            if !described(&t.description) {
                missing.push(name.to_string());
            }
            match &t.kind {
                TypeKind::Object(o) => {
                    for f in &o.fields {
                        let field = format!("{name}.{}", f.node.name.node);
                        if !described(&f.node.description) {
                            missing.push(field.clone());
                        }
                        for a in &f.node.arguments {
                            if !described(&a.node.description) {
                                missing.push(format!("{field}({})", a.node.name.node));
                            }
                        }
                    }
                }
                TypeKind::InputObject(i) => {
                    for f in &i.fields {
                        if !described(&f.node.description) {
                            missing.push(format!("{name}.{}", f.node.name.node));
                        }
                    }
                }
                TypeKind::Enum(e) => {
                    for v in &e.values {
                        if !described(&v.node.description) {
                            missing.push(format!("{name}.{}", v.node.value.node));
                        }
                    }
                }
                TypeKind::Scalar if !t.directives.iter().any(|d| d.node.name.node == "specifiedBy") => {
                    missing.push(format!("{name} @specifiedBy"));
                }
                _ => {}
            }
        }
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }
}
