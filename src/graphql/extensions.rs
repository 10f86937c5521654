//! The async-graphql extension that adds the guardrails the schema builder does not have
//! (aliases, directives, introspection off) and records per-operation metrics.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, Value, Variables};

/// Refuses requests with too many aliases or directives (alias overload, directive overload),
/// and introspection when it is switched off; records each operation's latency and outcome.
/// It hooks parsing and execution only: a `resolve` hook would run for every field.
pub struct Guardrails {
    pub max_aliases: usize,
    pub max_directives: usize,
    pub introspection: bool,
}

impl ExtensionFactory for Guardrails {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardrailsExt {
            max_aliases: self.max_aliases,
            max_directives: self.max_directives,
            introspection: self.introspection,
            root_fields: Default::default(),
        })
    }
}

struct GuardrailsExt {
    max_aliases: usize,
    max_directives: usize,
    introspection: bool,
    /// The request's root fields, seen at parse time, to label its metrics.
    root_fields: std::sync::Mutex<String>,
}

/// Whether a selection asks for the schema (`__schema` or `__type`) at its top level.
fn asks_for_schema(set: &SelectionSet, doc: &ExecutableDocument) -> bool {
    set.items.iter().any(|item| match &item.node {
        Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
        Selection::InlineFragment(i) => asks_for_schema(&i.node.selection_set.node, doc),
        Selection::FragmentSpread(s) => doc
            .fragments
            .get(&s.node.fragment_name.node)
            .is_some_and(|f| asks_for_schema(&f.node.selection_set.node, doc)),
    })
}

#[derive(Default)]
struct Counts {
    aliases: usize,
    directives: usize,
}

fn walk(set: &SelectionSet, c: &mut Counts) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                c.aliases += usize::from(f.node.alias.is_some());
                c.directives += f.node.directives.len();
                walk(&f.node.selection_set.node, c);
            }
            Selection::FragmentSpread(s) => c.directives += s.node.directives.len(),
            Selection::InlineFragment(i) => {
                c.directives += i.node.directives.len();
                walk(&i.node.selection_set.node, c);
            }
        }
    }
}

fn refuse(message: String) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", "GRAPHQL_VALIDATION_FAILED");
    e.extensions = Some(ext);
    e
}

#[async_trait::async_trait]
impl Extension for GuardrailsExt {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if !self.introspection
            && doc.operations.iter().any(|(_, op)| asks_for_schema(&op.node.selection_set.node, &doc))
        {
            return Err(refuse("Introspection is disabled on this server.".into()));
        }
        // Schema field names only, so the label set stays bounded whatever clients send.
        let mut roots: Vec<&str> = Vec::new();
        for (_, op) in doc.operations.iter() {
            for item in &op.node.selection_set.node.items {
                if let Selection::Field(f) = &item.node
                    && !f.node.name.node.starts_with("__")
                {
                    roots.push(f.node.name.node.as_str());
                }
            }
        }
        roots.sort_unstable();
        roots.dedup();
        *self.root_fields.lock().unwrap_or_else(|p| p.into_inner()) =
            if roots.is_empty() { "introspection".into() } else { roots.join(",") };
        let mut c = Counts::default();
        for (_, op) in doc.operations.iter() {
            c.directives += op.node.directives.len();
            walk(&op.node.selection_set.node, &mut c);
        }
        for f in doc.fragments.values() {
            c.directives += f.node.directives.len();
            walk(&f.node.selection_set.node, &mut c);
        }
        if c.aliases > self.max_aliases {
            return Err(refuse(format!(
                "The request uses {} aliases; at most {} are allowed.",
                c.aliases, self.max_aliases
            )));
        }
        if c.directives > self.max_directives {
            return Err(refuse(format!(
                "The request uses {} directives; at most {} are allowed.",
                c.directives, self.max_directives
            )));
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let response = next.run(ctx, operation_name).await;
        let outcome = match response.errors.first().and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")) {
            None if response.errors.is_empty() => "ok".to_string(),
            Some(Value::String(code)) => code.clone(),
            _ => "error".to_string(),
        };
        let operation = self.root_fields.lock().unwrap_or_else(|p| p.into_inner()).clone();
        metrics::histogram!(crate::metrics::GRAPHQL_OPERATION_SECONDS, "operation" => operation, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        response
    }
}
