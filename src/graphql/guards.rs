//! Guards: the scope an operation needs (checked once, before the resolver runs), and the
//! tighter rate limit of the operations that cost money or call Plaid (spent by the resolver
//! once the input is valid). Resolvers read the caller the guard let through.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Guard};

use crate::auth::AuthState;
use crate::error::AppError;
use crate::ratelimit::{Limiters, retry_after_secs};

/// Requires an authenticated caller with this scope.
pub struct RequireScope(pub &'static str);

impl Guard for RequireScope {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        auth_state(ctx)?.require(self.0).map(|_| ()).map_err(|e| e.extend())
    }
}

/// Spends one of the caller's sensitive operations (createPlaidLinkToken, completePlaidLink,
/// refreshPlaidBankConnections) under `RATE_LIMIT_SENSITIVE_PER_MINUTE`, called by the resolver
/// once the input is valid. The limiters are schema data; a schema built without them
/// (`bankgraph schema`) has no limit to apply.
pub fn spend_sensitive(ctx: &Context<'_>, user: &str) -> async_graphql::Result<()> {
    let Ok(limiters) = ctx.data::<Arc<Limiters>>() else {
        return Ok(());
    };
    limiters.check_sensitive(user).map_err(|wait| {
        AppError::RateLimited {
            message: "Too many of these operations; retry later.".into(),
            retry_after_seconds: retry_after_secs(wait),
        }
        .extend()
    })
}

fn auth_state<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a AuthState> {
    ctx.data::<AuthState>().map_err(|_| AppError::Unauthenticated("Authentication required.".into()).extend())
}

/// The caller the guard let through (its `sub`).
pub fn caller<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a str> {
    match auth_state(ctx)? {
        AuthState::Authenticated(c) => Ok(c.user_id.as_str()),
        _ => Err(AppError::Unauthenticated("Authentication required.".into()).extend()),
    }
}
