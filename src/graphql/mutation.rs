//! The contract's mutations. The three that cost money or call Plaid also spend the caller's
//! sensitive-operation budget, once their input is valid: a refused call costs nothing, and
//! neither does a replay of a decided `completePlaidLink`.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, ID, Object};
use secrecy::SecretString;

use super::guards::{RequireScope, caller, spend_sensitive};
use super::inputs::{
    CompletePlaidLinkInput, CreatePlaidLinkAddressInput, CreatePlaidLinkTokenInput, RemovePlaidBankInstitutionInput,
    bad, id_arg,
};
use super::scalars::{DateTime, Money};
use super::types::{
    CompletePlaidLinkPayload, CreatePlaidLinkAddressPayload, PlaidLinkMode, PlaidLinkToken, PlaidRefreshBalance,
    PlaidVerifyMember, RefreshPlaidBankConnectionsPayload, RemovalReason, RemovePlaidBankInstitutionPayload,
};
use super::{GqlResult, PLAID_FIELD_COST};
use crate::auth::MANAGE_PAYMENT;
use crate::domain::Address;
use crate::identity::IdentityService;

pub struct Mutation;

/// The changes: linking, relinking, refreshing, addresses and removal.
#[Object]
impl Mutation {
    /// A Link token: a new link with `{}`, update mode (relink) with `platformItemId`.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn create_plaid_link_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "`{}` for a new link; `platformItemId` to relink; `deviceOs` for native Link.")]
        input: CreatePlaidLinkTokenInput,
    ) -> GqlResult<PlaidLinkToken> {
        let user = caller(ctx)?;
        let item = id_arg("platformItemId", input.platform_item_id.as_deref())?;
        let os = input.device_os.map(Into::into);
        spend_sensitive(ctx, user)?;
        let t = ctx
            .data_unchecked::<Arc<dyn IdentityService>>()
            .create_link_token(user, os, item.as_deref())
            .await
            .map_err(|e| e.extend())?;
        Ok(PlaidLinkToken {
            link_token: t.link_token,
            expiration: DateTime(t.expiration),
            request_id: t.request_id,
            mode: if t.update_mode { PlaidLinkMode::Update } else { PlaidLinkMode::Create },
        })
    }

    /// Completes Link: stores the connection, its accounts and balances, and starts the first
    /// transaction sync. Idempotent per public token. `LINK_RESTART_REQUIRED` when the public
    /// token was exchanged but the connection could not be stored (a failure, or a process
    /// killed mid-completion that a retry took over): the token is spent; run Link again.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn complete_plaid_link(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The public token from Link's onSuccess (and `platformItemId` after a relink).")]
        input: CompletePlaidLinkInput,
    ) -> GqlResult<CompletePlaidLinkPayload> {
        let user = caller(ctx)?;
        let token = input.public_token.trim();
        if token.is_empty() || token.len() > 512 || token.chars().any(char::is_control) {
            return Err(bad("publicToken must be the public_token Plaid Link returned"));
        }
        let item = id_arg("platformItemId", input.platform_item_id.as_deref())?;
        let token = SecretString::from(token.to_string());
        let service = ctx.data_unchecked::<Arc<dyn IdentityService>>();
        // A replay of a decided completion answers from storage and costs no budget.
        if let Some(done) = service.replayed_link(user, &token).await.map_err(|e| e.extend())? {
            return Ok(done.into());
        }
        spend_sensitive(ctx, user)?;
        let done = service.complete_link(user, token, item).await.map_err(|e| e.extend())?;
        Ok(done.into())
    }

    /// A cached refresh (Plaid `/accounts/get`) of every active connection of the caller.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn refresh_plaid_bank_connections(&self, ctx: &Context<'_>) -> GqlResult<RefreshPlaidBankConnectionsPayload> {
        let user = caller(ctx)?;
        spend_sensitive(ctx, user)?;
        let r = ctx.data_unchecked::<Arc<dyn IdentityService>>().refresh(user).await.map_err(|e| e.extend())?;
        Ok(RefreshPlaidBankConnectionsPayload {
            status: r.status.into(),
            bank_balances: r.balances.iter().cloned().map(Into::into).collect(),
            balances: r
                .balances
                .into_iter()
                .map(|b| PlaidRefreshBalance {
                    bank_account_id: ID(b.account_id),
                    amount: b.available.map(Money),
                    current: b.current.map(Money),
                })
                .collect(),
            verify_members: r
                .verify
                .into_iter()
                .map(|v| PlaidVerifyMember {
                    platform_item_id: v.plaid_item_id,
                    bank_institution_auth_id: ID(v.connection_id),
                })
                .collect(),
        })
    }

    /// Attaches a postal address to one of the caller's connections.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn create_plaid_link_address(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection and its address.")] input: CreatePlaidLinkAddressInput,
    ) -> GqlResult<CreatePlaidLinkAddressPayload> {
        let user = caller(ctx)?;
        let conn = id_arg("bankInstitutionAuthId", Some(input.bank_institution_auth_id.as_str()))?.unwrap_or_default();
        let a = &input.address;
        let address = Address::parse(
            &a.street_address_line1,
            a.street_address_line2.as_deref(),
            &a.city,
            &a.state,
            &a.postal_code,
            &a.country,
        )
        .map_err(|problems| bad(format!("Invalid address: {}.", problems.join("; "))))?;
        let id = ctx
            .data_unchecked::<Arc<dyn IdentityService>>()
            .add_address(user, &conn, address)
            .await
            .map_err(|e| e.extend())?;
        Ok(CreatePlaidLinkAddressPayload { address_id: ID(id) })
    }

    /// Removes a connection at Plaid and hides it (history kept). Calling it again is fine.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn remove_plaid_bank_institution(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The connection to remove, and why.")] input: RemovePlaidBankInstitutionInput,
    ) -> GqlResult<RemovePlaidBankInstitutionPayload> {
        let user = caller(ctx)?;
        let conn = id_arg("bankInstitutionAuthId", Some(input.bank_institution_auth_id.as_str()))?.unwrap_or_default();
        let reason = input.reason.unwrap_or(RemovalReason::UserRequested).into();
        let account_ids = ctx
            .data_unchecked::<Arc<dyn IdentityService>>()
            .remove_connection(user, &conn, reason)
            .await
            .map_err(|e| e.extend())?;
        Ok(RemovePlaidBankInstitutionPayload {
            removed: true,
            bank_institution_auth_id: ID(conn),
            removed_bank_account_ids: account_ids.into_iter().map(ID).collect(),
        })
    }
}
