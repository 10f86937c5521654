//! Lists of flat objects (scalar and enum fields only) resolved in one step.
//!
//! async-graphql resolves each field of each object as its own boxed future, joined per object:
//! for a 9-account answer, 90 futures, and about half the CPU of the request. The objects of the
//! hot reads (accounts, balances, transaction pages) hold nothing but scalars and enums, so a
//! [`FlatList`] writes each requested field's value directly, walking the selection set as
//! async-graphql does (aliases, `__typename`, fragment spreads and inline fragments; `@skip`
//! and `@include` are applied before execution). The schema is unchanged: a `FlatList<T>` is
//! registered as `[T!]!` from `T`'s own derived type, and validation, complexity, depth and
//! every other guardrail run before resolution as before. A test compares both resolutions
//! on the same documents.

use std::borrow::Cow;

use async_graphql::parser::types::{Field, Selection};
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, InputType, Name, OutputType, Positioned, ServerError, ServerResult, Value};
use async_graphql_value::indexmap::IndexMap;

/// An object whose fields are all scalars or enums, each readable without a resolver.
pub trait FlatObject: OutputType {
    /// The value of the field called `name` (a field of the type: validation has checked it).
    fn field(&self, name: &str) -> Option<Value>;
}

/// The value of a scalar or enum field, exactly as async-graphql would resolve it.
pub fn value<T: InputType>(v: &T) -> Option<Value> {
    Some(v.to_value())
}

/// `[T!]!`, resolved without a future per field.
#[derive(Debug)]
pub struct FlatList<T>(pub Vec<T>);

impl<T> From<Vec<T>> for FlatList<T> {
    fn from(v: Vec<T>) -> Self {
        FlatList(v)
    }
}

impl<T: FlatObject> OutputType for FlatList<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, _field: &Positioned<Field>) -> ServerResult<Value> {
        let type_name = T::type_name();
        let mut list = Vec::with_capacity(self.0.len());
        for item in &self.0 {
            // Sized for the selection, so the map does not grow field by field.
            let mut object = IndexMap::with_capacity(ctx.item.node.items.len());
            collect(ctx, &type_name, item, &mut object)?;
            list.push(Value::Object(object));
        }
        Ok(Value::List(list))
    }
}

/// Writes the fields `ctx`'s selection set asks of `item` into `object`, in document order.
fn collect<T: FlatObject>(
    ctx: &ContextSelectionSet<'_>,
    type_name: &str,
    item: &T,
    object: &mut IndexMap<Name, Value>,
) -> ServerResult<()> {
    for selection in &ctx.item.node.items {
        match &selection.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                let key = field.node.response_key().node.clone();
                let value =
                    if name == "__typename" { Some(Value::String(type_name.to_string())) } else { item.field(name) };
                object.insert(key, value.unwrap_or_default());
            }
            Selection::FragmentSpread(spread) => {
                let fragment = ctx.query_env.fragments.get(&spread.node.fragment_name.node).ok_or_else(|| {
                    ServerError::new(
                        format!(r#"Unknown fragment "{}"."#, spread.node.fragment_name.node),
                        Some(spread.pos),
                    )
                })?;
                if applies(ctx, type_name, Some(fragment.node.type_condition.node.on.node.as_str())) {
                    collect(&ctx.with_selection_set(&fragment.node.selection_set), type_name, item, object)?;
                }
            }
            Selection::InlineFragment(fragment) => {
                if applies(ctx, type_name, fragment.node.type_condition.as_ref().map(|c| c.node.on.node.as_str())) {
                    collect(&ctx.with_selection_set(&fragment.node.selection_set), type_name, item, object)?;
                }
            }
        }
    }
    Ok(())
}

/// Whether a fragment with this type condition applies to the object: none, the type itself, or
/// an interface it implements.
fn applies(ctx: &ContextSelectionSet<'_>, type_name: &str, condition: Option<&str>) -> bool {
    condition.is_none_or(|c| {
        c == type_name || ctx.schema_env.registry.implements.get(type_name).is_some_and(|i| i.contains(c))
    })
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema, Variables};
    use chrono::{TimeZone, Utc};
    use rust_decimal::Decimal;
    use serde_json::{Value as Json, json};

    use super::FlatList;
    use crate::domain::{self, BalanceSource, BalanceTrigger, ConnectionStatus};
    use crate::graphql::types::{PlaidBankAccount, PlaidBankBalance, PlaidBankTransaction};

    fn accounts() -> Vec<domain::BankAccount> {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        (0..3)
            .map(|i| domain::BankAccount {
                id: format!("acc-{i}"),
                connection_id: "conn-1".into(),
                plaid_item_id: "item-1".into(),
                institution_name: "First Platypus Bank".into(),
                plaid_account_id: format!("plaid-{i}"),
                name: (i != 1).then(|| format!("Account {i}")),
                mask: Some(format!("{i}{i}{i}{i}")),
                account_type: "depository".into(),
                subtype: (i != 2).then(|| "checking".into()),
                status: if i == 0 { ConnectionStatus::Active } else { ConnectionStatus::LoginRequired },
                history_ready: i == 0,
                last_synced_at: (i == 0).then_some(at),
            })
            .collect()
    }

    fn balances() -> Vec<domain::Balance> {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        vec![
            domain::Balance {
                account_id: "acc-0".into(),
                connection_id: "conn-1".into(),
                plaid_item_id: "item-1".into(),
                available: Some(Decimal::new(10050, 2)),
                current: None,
                currency_code: Some("USD".into()),
                source: BalanceSource::PlaidCached,
                trigger: BalanceTrigger::Refresh,
                started_at: at,
            };
            2
        ]
    }

    fn transactions() -> Vec<domain::BankTransaction> {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        (0..2)
            .map(|i| domain::BankTransaction {
                id: format!("tx-{i}"),
                plaid_item_id: "item-1".into(),
                connection_id: "conn-1".into(),
                account_id: "acc-0".into(),
                plaid_transaction_id: format!("ptx-{i}"),
                amount: Decimal::new(if i == 0 { 1234 } else { -99 }, 2),
                currency_code: Some("USD".into()),
                date: at,
                description: Some("Coffee".into()),
                merchant_name: (i == 0).then(|| "Blue Bottle".into()),
                category: None,
                pending: i == 1,
            })
            .collect()
    }

    struct Q;

    #[Object]
    impl Q {
        async fn derived_accounts(&self) -> Vec<PlaidBankAccount> {
            accounts().into_iter().map(Into::into).collect()
        }
        async fn flat_accounts(&self) -> FlatList<PlaidBankAccount> {
            FlatList(accounts().into_iter().map(Into::into).collect())
        }
        async fn derived_balances(&self) -> Vec<PlaidBankBalance> {
            balances().into_iter().map(Into::into).collect()
        }
        async fn flat_balances(&self) -> FlatList<PlaidBankBalance> {
            FlatList(balances().into_iter().map(Into::into).collect())
        }
        async fn derived_transactions(&self) -> Vec<PlaidBankTransaction> {
            transactions().into_iter().map(Into::into).collect()
        }
        async fn flat_transactions(&self) -> FlatList<PlaidBankTransaction> {
            FlatList(transactions().into_iter().map(Into::into).collect())
        }
    }

    async fn run(schema: &Schema<Q, EmptyMutation, EmptySubscription>, query: &str, variables: Json) -> Json {
        let r = schema.execute(Request::new(query).variables(Variables::from_json(variables))).await;
        assert!(r.errors.is_empty(), "{query}: {:?}", r.errors);
        r.data.into_json().unwrap()
    }

    /// Every field of the type, from introspection.
    async fn all_fields(schema: &Schema<Q, EmptyMutation, EmptySubscription>, type_name: &str) -> String {
        let r = run(schema, &format!(r#"{{ __type(name: "{type_name}") {{ fields {{ name }} }} }}"#), json!({})).await;
        let names: Vec<String> =
            r["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap().to_string()).collect();
        assert!(names.len() >= 9, "{names:?}");
        names.join(" ")
    }

    #[tokio::test]
    async fn flat_lists_answer_exactly_what_async_graphql_answers_and_register_the_same_type() {
        let schema = Schema::new(Q, EmptyMutation, EmptySubscription);
        let sdl = schema.sdl();
        for (field, ty) in [
            ("Accounts", "PlaidBankAccount"),
            ("Balances", "PlaidBankBalance"),
            ("Transactions", "PlaidBankTransaction"),
        ] {
            // The same list type in the schema.
            assert!(
                sdl.contains(&format!("derived{field}: [{ty}!]!")) && sdl.contains(&format!("flat{field}: [{ty}!]!")),
                "{sdl}"
            );
            let all = all_fields(&schema, ty).await;
            let first = all.split(' ').next().unwrap().to_string();
            let selections = [
                all.clone(),
                format!("__typename {all}"),
                format!("x: {first} y: {first} {first} __typename t: __typename"),
                "...F".to_string(),
                format!("{first} ... on {ty} {{ {all} }} ... {{ z: {first} }}"),
                format!("... on {ty} {{ ...F }} {first}"),
                format!(
                    "{first} skipped: {first} @skip(if: $yes) kept: {first} @include(if: $yes) gone: {first} @include(if: $no)"
                ),
                format!("... @skip(if: $yes) {{ {all} }} ... @include(if: $yes) {{ a: {first} }}"),
            ];
            for selection in selections {
                let query = |root: &str| {
                    format!(
                        "query($yes: Boolean!, $no: Boolean!) {{ r: {root}{field} {{ {selection} u: {first} @include(if: $yes) @skip(if: $no) }} \
                         more: {root}{field} {{ ...F }} }} fragment F on {ty} {{ {all} __typename }}"
                    )
                };
                let vars = json!({"yes": true, "no": false});
                let derived = run(&schema, &query("derived"), vars.clone()).await;
                let flat = run(&schema, &query("flat"), vars).await;
                assert_eq!(
                    serde_json::to_string(&derived).unwrap(),
                    serde_json::to_string(&flat).unwrap(),
                    "{ty}: {selection}"
                );
            }
        }
    }
}
