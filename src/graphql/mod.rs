//! The public GraphQL contract (`schema.graphql`): types named as in the contract, every Plaid
//! operation behind the `MANAGE_PAYMENT` guard, input checked before the identity service is
//! called. Resolvers only translate; the identity service decides.

use std::sync::Arc;

use async_graphql::{
    Context, EmptySubscription, Enum, ID, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType,
    Schema, SimpleObject, Value,
};
use chrono::{SecondsFormat, Utc};
use rust_decimal::Decimal;
use secrecy::SecretString;

use crate::auth::{AuthState, MANAGE_PAYMENT, RequireScope};
use crate::config::GraphqlLimits;
use crate::domain::{self, Address, ConnectionStatus};
use crate::error::AppError;
use crate::identity::{self, AccountFilter, IdentityService, TransactionFilter};
use crate::ratelimit::Limiters;

pub mod guardrails;

pub type BankgraphSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema with the guardrails in front of it: what the GraphQL endpoint executes.
pub struct Gateway {
    schema: BankgraphSchema,
    guardrails: guardrails::Guardrails,
}

impl Gateway {
    /// Builds the schema around an identity service, with the configured limits; the rate
    /// limiters reach the guards of the sensitive operations as schema data.
    pub fn new(identity: Arc<dyn IdentityService>, limits: &GraphqlLimits, limiters: Arc<Limiters>) -> Self {
        let introspection = limits.introspection;
        let mut b = Schema::build(Query, Mutation, EmptySubscription)
            .data(identity)
            .data(limiters)
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
            guardrails: guardrails::Guardrails::new(limits.max_aliases, limits.max_directives, introspection, &sdl),
        }
    }

    /// Runs one request: its document is parsed (or found parsed) and checked, then validated
    /// and executed. Every error of the response carries a stable `extensions.code`, and the
    /// operation's latency and outcome are recorded by its root fields.
    pub async fn execute(&self, mut request: async_graphql::Request) -> Executed {
        let started = std::time::Instant::now();
        let prepared = match self.guardrails.prepare(&request.query) {
            Ok(p) => p,
            Err(e) => {
                metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "document").increment(1);
                return Executed { response: async_graphql::Response::from_errors(vec![e]), fields: None, name: None };
            }
        };
        let name = request.operation_name.as_deref().map(Arc::from).or_else(|| prepared.name.clone());
        let fields = Some(prepared.fields.clone());
        if let Err(e) = guardrails::check_required_variables(
            &prepared.document,
            request.operation_name.as_deref(),
            &request.variables,
        ) {
            metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "variables").increment(1);
            return Executed { response: async_graphql::Response::from_errors(vec![e]), fields, name };
        }
        request.set_parsed_query((*prepared.document).clone());
        let mut response = self.schema.execute(request).await;
        for err in &mut response.errors {
            let ext = err.extensions.get_or_insert_with(async_graphql::ErrorExtensionValues::default);
            if !matches!(ext.get("code"), Some(Value::String(_))) {
                ext.set("code", unlabelled_error_code(&err.message));
            }
        }
        let outcome = match response.errors.first().and_then(|e| e.extensions.as_ref()).and_then(|x| x.get("code")) {
            Some(Value::String(code)) => code.clone(),
            _ => "ok".to_string(),
        };
        metrics::histogram!(crate::metrics::GRAPHQL_OPERATION_SECONDS, "operation" => prepared.fields, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        Executed { response, fields, name }
    }
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

/// The code of an error async-graphql raised itself: input coercion (a variable or argument of
/// the wrong shape) is the caller's bad input; anything else it raises before resolving is a
/// validation failure (the document parsed, so it is not a parse error).
fn unlabelled_error_code(message: &str) -> &'static str {
    if message.contains("Invalid value") || message.contains("Failed to parse") || message.contains("invalid value") {
        crate::error::code::BAD_USER_INPUT
    } else {
        crate::error::code::GRAPHQL_VALIDATION_FAILED
    }
}

/// The SDL of the schema, as `bankgraph schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription).finish().sdl()
}

type GqlResult<T> = async_graphql::Result<T>;

/// What a Plaid field costs in the complexity limit: it reads the database or calls Plaid,
/// so aliasing it many times must hit the limit long before cheap fields do.
const PLAID_FIELD_COST: usize = 10;

/// The `DateTime` scalar: RFC 3339, written in UTC with a `Z`. A value that does not parse
/// is refused with the format expected and the value received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub chrono::DateTime<Utc>);

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => {
                chrono::DateTime::parse_from_rfc3339(s).map(|d| DateTime(d.with_timezone(&Utc))).map_err(|_| {
                    InputValueError::custom(format!(
                        "expected an RFC 3339 date-time such as \"2026-01-01T00:00:00Z\", got {s:?}"
                    ))
                })
            }
            other => Err(InputValueError::expected_type(other.clone())),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

fn caller<'a>(ctx: &'a Context<'_>) -> GqlResult<&'a str> {
    let state = ctx
        .data::<AuthState>()
        .map_err(|_| AppError::Unauthenticated("Authentication required.".into()).to_graphql())?;
    state.require(MANAGE_PAYMENT).map(|c| c.user_id.as_str()).map_err(|e| e.to_graphql())
}

/// The tighter per-caller limit of the operations that cost money or call Plaid.
fn sensitive(ctx: &Context<'_>, user: &str) -> GqlResult<()> {
    let Ok(limiters) = ctx.data::<Arc<Limiters>>() else {
        return Ok(());
    };
    limiters.check_sensitive(user).map_err(|wait| {
        AppError::RateLimited {
            message: "Too many of these operations; retry later.".into(),
            retry_after_seconds: crate::ratelimit::retry_after_secs(wait),
        }
        .to_graphql()
    })
}

fn service<'a>(ctx: &'a Context<'_>) -> &'a Arc<dyn IdentityService> {
    ctx.data_unchecked::<Arc<dyn IdentityService>>()
}

fn bad(message: impl Into<String>) -> async_graphql::Error {
    AppError::BadInput(message.into()).to_graphql()
}

/// Checks an id argument: not empty, not absurdly long.
fn id_arg(name: &str, v: Option<&str>) -> GqlResult<Option<String>> {
    match v.map(str::trim) {
        None => Ok(None),
        Some("") => Err(bad(format!("{name} must not be empty"))),
        Some(s) if s.len() > 200 => Err(bad(format!("{name} is too long"))),
        // NUL and other control characters are never part of an id (and PostgreSQL refuses
        // NUL in text, which would surface as an internal error).
        Some(s) if s.chars().any(char::is_control) => Err(bad(format!("{name} must not contain control characters"))),
        Some(s) => Ok(Some(s.to_string())),
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum DeviceOs {
    Ios,
    Android,
    Web,
}

/// Whether a Link token starts a new link or repairs an existing one (update mode).
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PlaidLinkMode {
    Create,
    Update,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum PlaidConnectionStatus {
    Active,
    LoginRequired,
    PendingExpiration,
    PendingDisconnect,
    Revoked,
    Error,
}

impl From<ConnectionStatus> for PlaidConnectionStatus {
    fn from(s: ConnectionStatus) -> Self {
        match s {
            ConnectionStatus::Active => PlaidConnectionStatus::Active,
            ConnectionStatus::LoginRequired => PlaidConnectionStatus::LoginRequired,
            ConnectionStatus::PendingExpiration => PlaidConnectionStatus::PendingExpiration,
            ConnectionStatus::PendingDisconnect => PlaidConnectionStatus::PendingDisconnect,
            ConnectionStatus::Revoked => PlaidConnectionStatus::Revoked,
            ConnectionStatus::Error => PlaidConnectionStatus::Error,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BalanceSource {
    PlaidCached,
    PlaidRealtime,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum BalanceTrigger {
    Link,
    Relink,
    Refresh,
    Webhook,
    Scheduled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RefreshStatus {
    Refreshed,
    Partial,
    Throttled,
    NoConnections,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionStatus {
    Pending,
    Posted,
}

/// `DEBIT` is money out of the account, `CREDIT` money in.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum TransactionType {
    Debit,
    Credit,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum RemovalReason {
    UserRequested,
    Duplicate,
    AccountClosed,
    FraudSuspected,
    Other,
}

impl From<RemovalReason> for domain::RemovalReason {
    fn from(r: RemovalReason) -> Self {
        match r {
            RemovalReason::UserRequested => domain::RemovalReason::UserRequested,
            RemovalReason::Duplicate => domain::RemovalReason::Duplicate,
            RemovalReason::AccountClosed => domain::RemovalReason::AccountClosed,
            RemovalReason::FraudSuspected => domain::RemovalReason::FraudSuspected,
            RemovalReason::Other => domain::RemovalReason::Other,
        }
    }
}

#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkTokenInput {
    /// For native Link: IOS (and WEB) add the OAuth redirect URI, ANDROID the package name.
    pub device_os: Option<DeviceOs>,
    /// Relink: the connection to repair (update mode).
    pub platform_item_id: Option<String>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidLinkToken {
    pub link_token: String,
    pub expiration: DateTime,
    pub request_id: String,
    pub mode: PlaidLinkMode,
}

#[derive(InputObject)]
pub struct CompletePlaidLinkInput {
    /// From Plaid Link's onSuccess. Single use; never stored or logged.
    #[graphql(secret)]
    pub public_token: String,
    /// Relink: the connection that was repaired in update mode.
    pub platform_item_id: Option<String>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccountSummary {
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    pub bank_name: String,
    pub last_four: Option<String>,
    #[graphql(name = "type")]
    pub account_type: String,
    pub subtype: Option<String>,
}

#[derive(SimpleObject, Debug)]
pub struct CompletePlaidLinkPayload {
    pub requires_address: bool,
    pub bank_account_id: Option<ID>,
    pub bank_institution_auth_id: Option<ID>,
    pub newly_linked_bank_institution_auth_id: Option<ID>,
    pub bank_institution_name: Option<String>,
    pub platform_item_id: Option<String>,
    pub bank_accounts: Vec<PlaidBankAccountSummary>,
}

impl From<identity::CompletedLink> for CompletePlaidLinkPayload {
    fn from(c: identity::CompletedLink) -> Self {
        CompletePlaidLinkPayload {
            requires_address: c.requires_address,
            bank_account_id: c.primary_account_id.map(ID),
            bank_institution_auth_id: Some(ID(c.connection_id)),
            newly_linked_bank_institution_auth_id: c.newly_linked_connection_id.map(ID),
            bank_institution_name: Some(c.institution_name),
            platform_item_id: Some(c.plaid_item_id),
            bank_accounts: c
                .accounts
                .into_iter()
                .map(|a| PlaidBankAccountSummary {
                    bank_institution_auth_id: ID(a.connection_id),
                    bank_account_id: ID(a.account_id),
                    bank_name: a.bank_name,
                    last_four: a.last_four,
                    account_type: a.account_type,
                    subtype: a.subtype,
                })
                .collect(),
        }
    }
}

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankAccountFilterInput {
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
    pub bank_account_id: Option<ID>,
}

fn account_filter(p: Option<&str>, c: Option<&ID>, a: Option<&ID>) -> GqlResult<AccountFilter> {
    Ok(AccountFilter {
        plaid_item_id: id_arg("platformItemId", p)?,
        connection_id: id_arg("bankInstitutionAuthId", c.map(|i| i.as_str()))?,
        account_id: id_arg("bankAccountId", a.map(|i| i.as_str()))?,
    })
}

impl PlaidBankAccountFilterInput {
    fn filter(&self) -> GqlResult<AccountFilter> {
        account_filter(
            self.platform_item_id.as_deref(),
            self.bank_institution_auth_id.as_ref(),
            self.bank_account_id.as_ref(),
        )
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankAccount {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_institution_name: String,
    pub bank_account_id: ID,
    /// The account's name at the bank or as the user labelled it.
    pub account_name: Option<String>,
    pub last_four: Option<String>,
    #[graphql(name = "type")]
    pub account_type: String,
    pub subtype: Option<String>,
    pub status: PlaidConnectionStatus,
}

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankBalanceFilterInput {
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
    pub bank_account_id: Option<ID>,
}

impl PlaidBankBalanceFilterInput {
    fn filter(&self) -> GqlResult<AccountFilter> {
        account_filter(
            self.platform_item_id.as_deref(),
            self.bank_institution_auth_id.as_ref(),
            self.bank_account_id.as_ref(),
        )
    }
}

impl From<domain::BankAccount> for PlaidBankAccount {
    fn from(a: domain::BankAccount) -> Self {
        PlaidBankAccount {
            platform_item_id: a.plaid_item_id,
            bank_institution_auth_id: ID(a.connection_id),
            bank_institution_name: a.institution_name,
            bank_account_id: ID(a.id),
            account_name: a.name,
            last_four: a.mask,
            account_type: a.account_type,
            subtype: a.subtype,
            status: a.status.into(),
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankBalance {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    /// The available balance.
    pub amount: Option<Decimal>,
    pub current: Option<Decimal>,
    pub currency_code: Option<String>,
    pub source: BalanceSource,
    pub trigger: BalanceTrigger,
    pub started_at: DateTime,
}

impl From<domain::Balance> for PlaidBankBalance {
    fn from(b: domain::Balance) -> Self {
        PlaidBankBalance {
            platform_item_id: b.plaid_item_id,
            bank_institution_auth_id: ID(b.connection_id),
            bank_account_id: ID(b.account_id),
            amount: b.available,
            current: b.current,
            currency_code: b.currency_code,
            source: match b.source {
                domain::BalanceSource::PlaidCached => BalanceSource::PlaidCached,
                domain::BalanceSource::PlaidRealtime => BalanceSource::PlaidRealtime,
            },
            trigger: match b.trigger {
                domain::BalanceTrigger::Link => BalanceTrigger::Link,
                domain::BalanceTrigger::Relink => BalanceTrigger::Relink,
                domain::BalanceTrigger::Refresh => BalanceTrigger::Refresh,
                domain::BalanceTrigger::Webhook => BalanceTrigger::Webhook,
                domain::BalanceTrigger::Scheduled => BalanceTrigger::Scheduled,
            },
            started_at: DateTime(b.started_at),
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidRefreshBalance {
    pub bank_account_id: ID,
    pub amount: Option<Decimal>,
    pub current: Option<Decimal>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidVerifyMember {
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
}

#[derive(SimpleObject, Debug)]
pub struct RefreshPlaidBankConnectionsPayload {
    pub status: RefreshStatus,
    pub balances: Vec<PlaidRefreshBalance>,
    pub verify_members: Vec<PlaidVerifyMember>,
}

/// Page window: `limit` 1..100 (default 50), `offset` ≥ 0.
#[derive(InputObject, Debug)]
pub struct PaginateInput {
    #[graphql(default = 50)]
    pub limit: i32,
    #[graphql(default = 0)]
    pub offset: i32,
}

#[derive(InputObject, Default, Debug)]
pub struct PlaidBankTransactionFilterInput {
    pub bank_account_id: Option<ID>,
    pub platform_item_id: Option<String>,
    pub bank_institution_auth_id: Option<ID>,
    pub start_date: Option<DateTime>,
    pub end_date: Option<DateTime>,
    pub pending: Option<bool>,
    pub paginate: Option<PaginateInput>,
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransaction {
    /// Stable across pending → posted: one purchase, one id.
    pub historical_bank_transaction_id: ID,
    pub platform_item_id: String,
    pub bank_institution_auth_id: ID,
    pub bank_account_id: ID,
    /// Plaid's current transaction id (it changes when a pending transaction posts).
    pub transaction_id: String,
    pub transaction_status: TransactionStatus,
    pub transaction_type: TransactionType,
    pub transaction_date: DateTime,
    /// The amount, always positive; `transactionType` says which way the money went.
    pub amount: Decimal,
    pub currency_code: Option<String>,
    pub description: Option<String>,
    pub merchant_name: Option<String>,
    pub category: Option<String>,
    pub pending: bool,
}

impl From<domain::BankTransaction> for PlaidBankTransaction {
    fn from(t: domain::BankTransaction) -> Self {
        PlaidBankTransaction {
            historical_bank_transaction_id: ID(t.id),
            platform_item_id: t.plaid_item_id,
            bank_institution_auth_id: ID(t.connection_id),
            bank_account_id: ID(t.account_id),
            transaction_id: t.plaid_transaction_id,
            transaction_status: if t.pending { TransactionStatus::Pending } else { TransactionStatus::Posted },
            transaction_type: if t.amount.is_sign_negative() {
                TransactionType::Credit
            } else {
                TransactionType::Debit
            },
            transaction_date: DateTime(t.date),
            amount: t.amount.abs(),
            currency_code: t.currency_code,
            description: t.description,
            merchant_name: t.merchant_name,
            category: t.category,
            pending: t.pending,
        }
    }
}

#[derive(SimpleObject, Debug)]
pub struct PlaidBankTransactionPage {
    pub total_count: i32,
    pub transactions: Vec<PlaidBankTransaction>,
}

#[derive(InputObject, Debug)]
pub struct AddressInput {
    pub street_address_line1: String,
    pub street_address_line2: Option<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. US.
    pub country: String,
}

#[derive(InputObject, Debug)]
pub struct CreatePlaidLinkAddressInput {
    pub bank_institution_auth_id: ID,
    pub address: AddressInput,
}

#[derive(SimpleObject, Debug)]
pub struct CreatePlaidLinkAddressPayload {
    pub address_id: ID,
}

#[derive(InputObject, Debug)]
pub struct RemovePlaidBankInstitutionInput {
    pub bank_institution_auth_id: ID,
    pub reason: Option<RemovalReason>,
}

#[derive(SimpleObject, Debug)]
pub struct RemovePlaidBankInstitutionPayload {
    pub removed: bool,
    pub bank_institution_auth_id: ID,
}

pub struct Query;

#[Object]
impl Query {
    /// The caller's linked bank accounts (removed connections excluded). Reads stored data only.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_accounts(
        &self,
        ctx: &Context<'_>,
        input: Option<PlaidBankAccountFilterInput>,
    ) -> GqlResult<Vec<PlaidBankAccount>> {
        let user = caller(ctx)?;
        let f = input.unwrap_or_default().filter()?;
        let accounts = service(ctx).accounts(user, f).await.map_err(|e| e.to_graphql())?;
        Ok(accounts.into_iter().map(Into::into).collect())
    }

    /// The latest stored balance of each of the caller's accounts.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_balances(
        &self,
        ctx: &Context<'_>,
        input: Option<PlaidBankBalanceFilterInput>,
    ) -> GqlResult<Vec<PlaidBankBalance>> {
        let user = caller(ctx)?;
        let f = input.unwrap_or_default().filter()?;
        let balances = service(ctx).balances(user, f).await.map_err(|e| e.to_graphql())?;
        Ok(balances.into_iter().map(Into::into).collect())
    }

    /// The caller's transaction history, newest first; `totalCount` counts the whole filtered set.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn get_plaid_bank_transactions(
        &self,
        ctx: &Context<'_>,
        input: Option<PlaidBankTransactionFilterInput>,
    ) -> GqlResult<PlaidBankTransactionPage> {
        let user = caller(ctx)?;
        let i = input.unwrap_or_default();
        let (limit, offset) = match &i.paginate {
            Some(p) => (p.limit, p.offset),
            None => (50, 0),
        };
        if !(1..=100).contains(&limit) {
            return Err(bad(format!("paginate.limit must be between 1 and 100, got {limit}")));
        }
        if offset < 0 {
            return Err(bad(format!("paginate.offset must be 0 or more, got {offset}")));
        }
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
        };
        let (total, rows) = service(ctx).transactions(user, filter).await.map_err(|e| e.to_graphql())?;
        Ok(PlaidBankTransactionPage {
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            transactions: rows.into_iter().map(Into::into).collect(),
        })
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// A Link token: a new link with `{}`, update mode (relink) with `platformItemId`.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn create_plaid_link_token(
        &self,
        ctx: &Context<'_>,
        input: CreatePlaidLinkTokenInput,
    ) -> GqlResult<PlaidLinkToken> {
        let user = caller(ctx)?;
        sensitive(ctx, user)?;
        let item = id_arg("platformItemId", input.platform_item_id.as_deref())?;
        let os = input.device_os.map(|d| match d {
            DeviceOs::Ios => identity::DeviceOs::Ios,
            DeviceOs::Android => identity::DeviceOs::Android,
            DeviceOs::Web => identity::DeviceOs::Web,
        });
        let t = service(ctx).create_link_token(user, os, item.as_deref()).await.map_err(|e| e.to_graphql())?;
        Ok(PlaidLinkToken {
            link_token: t.link_token,
            expiration: DateTime(t.expiration),
            request_id: t.request_id,
            mode: if t.update_mode { PlaidLinkMode::Update } else { PlaidLinkMode::Create },
        })
    }

    /// Completes Link: stores the connection, its accounts and balances, and starts the first
    /// transaction sync. Idempotent per public token.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn complete_plaid_link(
        &self,
        ctx: &Context<'_>,
        input: CompletePlaidLinkInput,
    ) -> GqlResult<CompletePlaidLinkPayload> {
        let user = caller(ctx)?;
        sensitive(ctx, user)?;
        let token = input.public_token.trim();
        if token.is_empty() || token.len() > 512 || token.chars().any(char::is_control) {
            return Err(bad("publicToken must be the public_token Plaid Link returned"));
        }
        let item = id_arg("platformItemId", input.platform_item_id.as_deref())?;
        let done = service(ctx)
            .complete_link(user, SecretString::from(token.to_string()), item)
            .await
            .map_err(|e| e.to_graphql())?;
        Ok(done.into())
    }

    /// A cached refresh (Plaid `/accounts/get`) of every active connection of the caller.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn refresh_plaid_bank_connections(&self, ctx: &Context<'_>) -> GqlResult<RefreshPlaidBankConnectionsPayload> {
        let user = caller(ctx)?;
        sensitive(ctx, user)?;
        let r = service(ctx).refresh(user).await.map_err(|e| e.to_graphql())?;
        Ok(RefreshPlaidBankConnectionsPayload {
            status: match r.status {
                identity::RefreshStatus::Refreshed => RefreshStatus::Refreshed,
                identity::RefreshStatus::Partial => RefreshStatus::Partial,
                identity::RefreshStatus::Throttled => RefreshStatus::Throttled,
                identity::RefreshStatus::NoConnections => RefreshStatus::NoConnections,
            },
            balances: r
                .balances
                .into_iter()
                .map(|b| PlaidRefreshBalance {
                    bank_account_id: ID(b.account_id),
                    amount: b.available,
                    current: b.current,
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
        input: CreatePlaidLinkAddressInput,
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
        let id = service(ctx).add_address(user, &conn, address).await.map_err(|e| e.to_graphql())?;
        Ok(CreatePlaidLinkAddressPayload { address_id: ID(id) })
    }

    /// Removes a connection at Plaid and hides it (history kept). Calling it again is fine.
    #[graphql(guard = "RequireScope(MANAGE_PAYMENT)", complexity = "PLAID_FIELD_COST + child_complexity")]
    async fn remove_plaid_bank_institution(
        &self,
        ctx: &Context<'_>,
        input: RemovePlaidBankInstitutionInput,
    ) -> GqlResult<RemovePlaidBankInstitutionPayload> {
        let user = caller(ctx)?;
        let conn = id_arg("bankInstitutionAuthId", Some(input.bank_institution_auth_id.as_str()))?.unwrap_or_default();
        let reason = input.reason.unwrap_or(RemovalReason::UserRequested).into();
        service(ctx).remove_connection(user, &conn, reason).await.map_err(|e| e.to_graphql())?;
        Ok(RemovePlaidBankInstitutionPayload { removed: true, bank_institution_auth_id: ID(conn) })
    }
}
