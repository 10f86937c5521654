//! The gateway: the schema behind the guardrails. A document is parsed once (or found
//! parsed), checked, then validated and executed; every error of the answer leaves with a
//! stable `extensions.code`.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{Pos, Schema, ServerError, Value};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::BankgraphSchema;
use super::document;
use super::guardrails::{self, Guardrails, Prepared};
use super::mutation::Mutation;
use super::persisted::PersistedDocuments;
use super::query::{MaxPageOffset, Query};
use super::subscription::Subscription;
use crate::auth::AuthState;
use crate::config::GraphqlLimits;
use crate::error::{INTERNAL_MESSAGE, code};
use crate::identity::IdentityService;
use crate::ratelimit::Limiters;

/// The schema with the guardrails in front of it: what the GraphQL endpoint executes.
pub struct Gateway {
    schema: BankgraphSchema,
    guardrails: Guardrails,
    persisted: PersistedDocuments,
}

impl Gateway {
    /// Builds the schema around an identity service, with the configured limits; the rate
    /// limiters reach the guards of the sensitive operations as schema data.
    pub fn new(identity: Arc<dyn IdentityService>, limits: &GraphqlLimits, limiters: Arc<Limiters>) -> Self {
        let introspection = limits.introspection;
        let mut b = Schema::build(Query, Mutation, Subscription)
            .data(identity)
            .data(limiters)
            .data(MaxPageOffset(limits.max_page_offset))
            .limit_depth(limits.max_depth)
            .limit_complexity(limits.max_complexity)
            .limit_recursive_depth(32)
            .limit_directives(limits.max_directives.max(1));
        if !introspection {
            b = b.disable_introspection().disable_suggestions();
        }
        let schema = b.finish();
        let sdl = schema.sdl();
        Gateway {
            schema,
            guardrails: Guardrails::new(limits.max_aliases, limits.max_directives, introspection, &sdl),
            persisted: PersistedDocuments::new(limits.trusted_documents.as_ref()),
        }
    }

    /// Checks a request before execution: the persisted document it names, the guardrails (a
    /// document parsed once, or found parsed), and the variables it must carry. On success the
    /// request holds its parsed document.
    fn admit(&self, request: &mut async_graphql::Request) -> Result<Prepared, Refused> {
        if let Err(e) = self.persisted.resolve(request) {
            metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "persisted_document").increment(1);
            return Err(Refused { error: Box::new(e), prepared: None });
        }
        let prepared = match self.guardrails.prepare(&request.query) {
            Ok(p) => p,
            Err(e) => {
                metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "document").increment(1);
                return Err(Refused { error: Box::new(e), prepared: None });
            }
        };
        if let Err(e) = guardrails::check_required_variables(
            &prepared.document,
            request.operation_name.as_deref(),
            &request.variables,
        ) {
            metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "variables").increment(1);
            return Err(Refused { error: Box::new(e), prepared: Some(prepared) });
        }
        request.set_parsed_query((*prepared.document).clone());
        Ok(prepared)
    }

    /// Runs one request: its document is parsed (or found parsed) and checked, then validated
    /// and executed. Every error of the response carries a stable `extensions.code` (an
    /// internal one its generic message and the request id), and the
    /// operation's latency and outcome are recorded by its root fields.
    pub async fn execute(&self, mut request: async_graphql::Request, request_id: &str, method: Method) -> Executed {
        let started = std::time::Instant::now();
        let operation_name = request.operation_name.clone();
        let prepared = match self.admit(&mut request) {
            Ok(p) => p,
            Err(r) => return r.executed(operation_name.as_deref()),
        };
        let name = operation_name.as_deref().map(Arc::from).or_else(|| prepared.name.clone());
        let fields = Some(prepared.fields.clone());
        let refuse = |message: &str, code: &str| Executed {
            response: async_graphql::Response::from_errors(vec![guardrails::with_code(
                ServerError::new(message, None),
                code,
            )]),
            fields: fields.clone(),
            name: name.clone(),
        };
        match document::operation_type(&prepared.document, operation_name.as_deref()) {
            // GraphQL over HTTP: GET carries queries only, so a link can never change anything.
            Some(OperationType::Mutation) if method == Method::Get => {
                return refuse("Mutations are accepted only over POST.", code::METHOD_NOT_ALLOWED);
            }
            Some(OperationType::Subscription) => {
                return refuse(
                    "Subscriptions are served over WebSocket (the graphql-transport-ws protocol) at /api/v1/graphql.",
                    code::METHOD_NOT_ALLOWED,
                );
            }
            _ => {}
        }
        let mut response = self.schema.execute(request).await;
        label_errors(&mut response.errors, &prepared, request_id);
        let outcome = match response.errors.first().and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")) {
            Some(Value::String(code)) => code.clone(),
            _ => "ok".to_string(),
        };
        metrics::histogram!(crate::metrics::GRAPHQL_OPERATION_SECONDS, "operation" => prepared.fields, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        Executed { response, fields, name }
    }

    /// Starts a subscription sent over a WebSocket, for the caller `auth` let in: the same
    /// checks as a request over HTTP, and the same error codes. Only subscriptions are served
    /// this way (queries and mutations go over HTTP, with its limits). `Err` carries the errors
    /// of a subscription that did not start.
    pub fn subscribe(
        &self,
        mut request: async_graphql::Request,
        auth: AuthState,
        request_id: Arc<str>,
    ) -> Result<BoxStream<'static, async_graphql::Response>, Vec<ServerError>> {
        let operation_name = request.operation_name.clone();
        let prepared = self.admit(&mut request).map_err(|r| vec![*r.error])?;
        if document::operation_type(&prepared.document, operation_name.as_deref()) != Some(OperationType::Subscription)
        {
            return Err(vec![guardrails::with_code(
                ServerError::new(
                    "This socket carries subscriptions; send queries and mutations over HTTP POST to /api/v1/graphql.",
                    None,
                ),
                code::METHOD_NOT_ALLOWED,
            )]);
        }
        let prepared = Arc::new(prepared);
        let stream = self.schema.execute_stream(request.data(auth)).map(move |mut response| {
            label_errors(&mut response.errors, &prepared, &request_id);
            response
        });
        Ok(stream.boxed())
    }
}

/// A request refused before execution: the error, and the document when it parsed.
struct Refused {
    error: Box<ServerError>,
    prepared: Option<Prepared>,
}

impl Refused {
    fn executed(self, operation_name: Option<&str>) -> Executed {
        let (fields, name) = match &self.prepared {
            Some(p) => (Some(p.fields.clone()), operation_name.map(Arc::from).or_else(|| p.name.clone())),
            None => (None, None),
        };
        Executed { response: async_graphql::Response::from_errors(vec![*self.error]), fields, name }
    }
}

/// Gives every error a stable `extensions.code`; an internal one gets the generic message
/// and the request id to quote (its detail was logged where it happened).
fn label_errors(errors: &mut [ServerError], prepared: &Prepared, request_id: &str) {
    let mut from_variables: Option<HashSet<Pos>> = None;
    for err in errors {
        let labelled = match err.extensions.as_ref().and_then(|x| x.get("code")) {
            Some(Value::String(c)) => Some(c.as_str() == code::INTERNAL_SERVER_ERROR),
            _ => None,
        };
        let internal = match labelled {
            Some(internal) => internal,
            None => {
                let from_variables =
                    from_variables.get_or_insert_with(|| document::arguments_with_variables(&prepared.document));
                let code = unlabelled_code(err, from_variables);
                err.extensions.get_or_insert_with(async_graphql::ErrorExtensionValues::default).set("code", code);
                false
            }
        };
        if internal {
            err.message = format!("{INTERNAL_MESSAGE} Request id: {request_id}.");
            err.extensions.get_or_insert_with(Default::default).set("requestId", request_id);
        }
    }
}

/// How a request arrived: over GET only queries run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A request's answer, and what names it in logs.
pub struct Executed {
    pub response: async_graphql::Response,
    /// The root fields it asked for, as the metrics label them (none when it did not parse or
    /// broke a guardrail).
    pub fields: Option<Arc<str>>,
    /// The operation's name: `operationName`, else the name of the document's only operation.
    pub name: Option<Arc<str>>,
}

/// The code of an error async-graphql raised itself (every error of ours carries one). What
/// the caller sent as variables is input: an error at an argument whose value uses a variable
/// (validation substitutes variables), or raised while resolving (a scalar that does not
/// parse), is `BAD_USER_INPUT`. Anything else is the document breaking a rule.
fn unlabelled_code(err: &ServerError, from_variables: &HashSet<Pos>) -> &'static str {
    if !err.path.is_empty() || err.locations.iter().any(|p| from_variables.contains(p)) {
        code::BAD_USER_INPUT
    } else {
        code::GRAPHQL_VALIDATION_FAILED
    }
}
