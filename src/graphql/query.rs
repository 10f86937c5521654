//! The contract's queries: reads of stored data, scoped to the caller.

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions, Object};

use super::cursor;
use super::flat::FlatList;
use super::guards::{RequireScope, caller};
use super::inputs::{
    PlaidBankAccountFilterInput, PlaidBankBalanceFilterInput, PlaidBankTransactionFilterInput, account_filter, bad,
};
use super::types::{PageInfo, PlaidBankAccount, PlaidBankBalance, PlaidBankTransactionPage};
use super::{GqlResult, PLAID_FIELD_COST};
use crate::auth::MANAGE_PAYMENT;
use crate::identity::{IdentityService, TransactionFilter};

pub struct Query;

/// The deepest `paginate.offset` accepted (`MAX_PAGE_OFFSET`): the database reads every row it
/// skips, so deeper pages go by `paginate.after`.
pub struct MaxPageOffset(pub i32);

/// The reads: the caller's stored data, never a call to Plaid.
#[Object]
impl Query {
    /// The caller's linked bank accounts (removed connections excluded). Reads stored data only.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_accounts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which accounts (all the caller's when omitted).")] input: Option<PlaidBankAccountFilterInput>,
    ) -> GqlResult<FlatList<PlaidBankAccount>> {
        let user = caller(ctx)?;
        let f = input.unwrap_or_default().filter()?;
        let accounts =
            ctx.data_unchecked::<Arc<dyn IdentityService>>().accounts(user, f).await.map_err(|e| e.extend())?;
        Ok(FlatList(accounts.into_iter().map(Into::into).collect()))
    }

    /// The latest stored balance of each of the caller's accounts.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_balances(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which balances (all the caller's when omitted).")] input: Option<PlaidBankBalanceFilterInput>,
    ) -> GqlResult<FlatList<PlaidBankBalance>> {
        let user = caller(ctx)?;
        let f = input.unwrap_or_default().filter()?;
        let balances =
            ctx.data_unchecked::<Arc<dyn IdentityService>>().balances(user, f).await.map_err(|e| e.extend())?;
        Ok(FlatList(balances.into_iter().map(Into::into).collect()))
    }

    /// The caller's transaction history, newest first; `totalCount` counts the whole filtered set.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_transactions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which transactions, and the page (all the caller's, first 50, when omitted).")] input: Option<
            PlaidBankTransactionFilterInput,
        >,
    ) -> GqlResult<PlaidBankTransactionPage> {
        let user = caller(ctx)?;
        let i = input.unwrap_or_default();
        let (limit, offset, after) = match &i.paginate {
            Some(p) => (p.limit, p.offset, p.after.as_deref()),
            None => (50, 0, None),
        };
        if !(1..=100).contains(&limit) {
            return Err(bad(format!("paginate.limit must be between 1 and 100, got {limit}")));
        }
        if offset < 0 {
            return Err(bad(format!("paginate.offset must be 0 or more, got {offset}")));
        }
        let max_offset = ctx.data_unchecked::<MaxPageOffset>().0;
        if offset > max_offset {
            return Err(bad(format!(
                "paginate.offset must be at most {max_offset}, got {offset}: to go deeper, page with paginate.after \
                 (the previous page's pageInfo.endCursor)"
            )));
        }
        let after = match after {
            Some(_) if offset > 0 => return Err(bad("paginate: give offset or after, not both")),
            Some(c) => Some(cursor::decode(c).ok_or_else(|| bad("paginate.after is not a cursor this server gave"))?),
            None => None,
        };
        if let (Some(s), Some(e)) = (i.start_date, i.end_date)
            && e < s
        {
            return Err(bad("endDate must not be before startDate"));
        }
        let filter = TransactionFilter {
            accounts: account_filter(
                i.platform_item_id.as_deref(),
                i.bank_institution_auth_id.as_ref(),
                i.bank_account_id.as_ref(),
            )?,
            start: i.start_date.map(|d| d.0),
            end: i.end_date.map(|d| d.0),
            pending: i.pending,
            limit: limit as i64,
            offset: offset as i64,
            after,
        };
        let page = ctx
            .data_unchecked::<Arc<dyn IdentityService>>()
            .transactions(user, filter)
            .await
            .map_err(|e| e.extend())?;
        let end_cursor = page.transactions.last().map(|t| cursor::encode(t.date, &t.id));
        Ok(PlaidBankTransactionPage {
            total_count: i32::try_from(page.total).unwrap_or(i32::MAX),
            transactions: FlatList(page.transactions.into_iter().map(Into::into).collect()),
            page_info: PageInfo { end_cursor, has_next_page: page.has_next },
        })
    }
}
