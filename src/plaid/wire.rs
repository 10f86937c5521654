//! Plaid's JSON shapes (API version `2020-09-14`), shared by the client and the emulator.
//!
//! One set of types serves both sides so that they keep each other honest: whatever the
//! emulator writes, the client must read. Fields that Plaid documents as nullable are
//! `Option`s written as `null`; fields that are merely optional are skipped when absent.
//! Readers ignore unknown fields (Plaid adds fields without a version bump), and every enum
//! that Plaid may extend is a `String`.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::amount;

/// The API version bankgraph speaks and the emulator serves.
pub const PLAID_VERSION: &str = "2020-09-14";

/// Plaid's error object: the body of a failed call, `item.error`, and `error` in webhooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaidErrorBody {
    pub error_type: String,
    pub error_code: String,
    #[serde(default)]
    pub error_message: String,
    #[serde(default)]
    pub display_message: Option<String>,
    /// Present in API responses, absent inside webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The HTTP status; only sent inside webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_action: Option<String>,
}

impl PlaidErrorBody {
    /// An `ITEM_ERROR` with this code and nothing else: what an item notice stands for.
    pub fn item_error(code: &str) -> Self {
        PlaidErrorBody { error_type: "ITEM_ERROR".into(), error_code: code.into(), ..Default::default() }
    }
}

/// The Item object (`/item/get`, `/accounts/get`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub item_id: String,
    #[serde(default)]
    pub institution_id: Option<String>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub error: Option<PlaidErrorBody>,
    #[serde(default)]
    pub available_products: Vec<String>,
    #[serde(default)]
    pub billed_products: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    #[serde(default)]
    pub consent_expiration_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub update_type: String,
}

/// Balances of one account. Amounts are decimals; see [`amount`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balances {
    #[serde(with = "amount::option", default)]
    pub available: Option<Decimal>,
    #[serde(with = "amount::option", default)]
    pub current: Option<Decimal>,
    #[serde(with = "amount::option", default)]
    pub limit: Option<Decimal>,
    #[serde(default)]
    pub iso_currency_code: Option<String>,
    #[serde(default)]
    pub unofficial_currency_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_datetime: Option<DateTime<Utc>>,
}

/// The Account object. `owners` is present only from `/identity/get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: String,
    pub balances: Balances,
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub official_name: Option<String>,
    #[serde(rename = "type")]
    pub account_type: String,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<Owner>>,
}

/// An account holder, from `/identity/get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub phone_numbers: Vec<OwnerPhone>,
    #[serde(default)]
    pub emails: Vec<OwnerEmail>,
    #[serde(default)]
    pub addresses: Vec<OwnerAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerPhone {
    pub data: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerEmail {
    pub data: String,
    #[serde(default)]
    pub primary: bool,
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnerAddress {
    pub data: AddressData,
    #[serde(default)]
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressData {
    #[serde(default)]
    pub street: String,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

/// Where a transaction happened; every field may be null.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub address: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    /// Coordinates are not money; Plaid sends them as numbers and we pass them through.
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub store_number: Option<String>,
}

/// Payment metadata; the key is always present, its fields may all be null.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentMeta {
    pub reference_number: Option<String>,
    pub ppd_id: Option<String>,
    pub payee: Option<String>,
    pub by_order_of: Option<String>,
    pub payer: Option<String>,
    pub payment_method: Option<String>,
    pub payment_processor: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalFinanceCategory {
    pub primary: String,
    pub detailed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_level: Option<String>,
}

/// The Transaction object (`/transactions/sync` and `/transactions/get`).
/// `amount` is positive for money leaving the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub account_id: String,
    #[serde(with = "amount")]
    pub amount: Decimal,
    #[serde(default)]
    pub iso_currency_code: Option<String>,
    #[serde(default)]
    pub unofficial_currency_code: Option<String>,
    #[serde(default)]
    pub category: Option<Vec<String>>,
    #[serde(default)]
    pub category_id: Option<String>,
    #[serde(default)]
    pub check_number: Option<String>,
    pub date: NaiveDate,
    #[serde(default)]
    pub datetime: Option<DateTime<Utc>>,
    #[serde(default)]
    pub authorized_date: Option<NaiveDate>,
    #[serde(default)]
    pub authorized_datetime: Option<DateTime<Utc>>,
    #[serde(default)]
    pub location: Location,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub merchant_name: Option<String>,
    #[serde(default)]
    pub payment_meta: PaymentMeta,
    #[serde(default)]
    pub payment_channel: String,
    pub pending: bool,
    #[serde(default)]
    pub pending_transaction_id: Option<String>,
    #[serde(default)]
    pub account_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_type: Option<String>,
    #[serde(default)]
    pub transaction_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_finance_category: Option<PersonalFinanceCategory>,
}

/// An entry of `removed` in `/transactions/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovedTransaction {
    pub transaction_id: String,
    #[serde(default)]
    pub account_id: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Requests and responses, endpoint by endpoint. Credentials never appear in these structs: the
// client sends them as headers, and the emulator reads them before it parses a body.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenUser {
    pub client_user_id: String,
}

/// `/link/token/create`. `access_token` selects update mode; it is filled in by the client
/// from a secret at the moment of the call, never kept in this struct by callers.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenCreateRequest {
    pub client_name: String,
    pub language: String,
    pub country_codes: Vec<String>,
    pub user: LinkTokenUser,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub android_package_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_filters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_customization_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<serde_json::Value>,
    /// Proxy (seed 000) addition; also Plaid's own Europe-only field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution_id: Option<String>,
    /// Proxy (seed 000) addition: the front end's session secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_client_secret: Option<String>,
}

impl std::fmt::Debug for LinkTokenCreateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkTokenCreateRequest")
            .field("client_name", &self.client_name)
            .field("country_codes", &self.country_codes)
            .field("products", &self.products)
            .field("update_mode", &self.access_token.is_some())
            .field("webhook", &self.webhook)
            .field("redirect_uri", &self.redirect_uri)
            .field("android_package_name", &self.android_package_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenCreateResponse {
    pub link_token: String,
    pub expiration: DateTime<Utc>,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenGetRequest {
    pub link_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenGetMetadata {
    #[serde(default)]
    pub initial_products: Vec<String>,
    #[serde(default)]
    pub webhook: Option<String>,
    #[serde(default)]
    pub country_codes: Vec<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkTokenGetResponse {
    pub link_token: String,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expiration: Option<DateTime<Utc>>,
    pub metadata: LinkTokenGetMetadata,
    pub request_id: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicTokenExchangeRequest {
    pub public_token: String,
}

/// `/item/public_token/exchange`. Debug redacts the access token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicTokenExchangeResponse {
    pub access_token: String,
    pub item_id: String,
    pub request_id: String,
}

impl std::fmt::Debug for PublicTokenExchangeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicTokenExchangeResponse")
            .field("access_token", &"[redacted]")
            .field("item_id", &self.item_id)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Any request that carries only an access token (`/item/get`, `/item/remove`, ...).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenRequest {
    pub access_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionsStatus {
    #[serde(default)]
    pub last_successful_update: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_failed_update: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastWebhook {
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub code_sent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemStatus {
    #[serde(default)]
    pub transactions: Option<TransactionsStatus>,
    #[serde(default)]
    pub last_webhook: Option<LastWebhook>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemGetResponse {
    pub item: Item,
    #[serde(default)]
    pub status: Option<ItemStatus>,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestIdResponse {
    pub request_id: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemWebhookUpdateRequest {
    pub access_token: String,
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemWebhookUpdateResponse {
    pub item: Item,
    pub request_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountIdsOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ids: Option<Vec<String>>,
    /// Only for `/accounts/balance/get` at Capital One.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_last_updated_datetime: Option<DateTime<Utc>>,
}

/// `/accounts/get`, `/accounts/balance/get`, `/auth/get`, `/identity/get`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountsRequest {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<AccountIdsOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountsResponse {
    pub accounts: Vec<Account>,
    pub item: Item,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumbersAch {
    pub account_id: String,
    pub account: String,
    pub routing: String,
    #[serde(default)]
    pub wire_routing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumbersEft {
    pub account_id: String,
    pub account: String,
    pub institution: String,
    pub branch: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumbersInternational {
    pub account_id: String,
    pub iban: String,
    pub bic: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumbersBacs {
    pub account_id: String,
    pub account: String,
    pub sort_code: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthNumbers {
    #[serde(default)]
    pub ach: Vec<NumbersAch>,
    #[serde(default)]
    pub eft: Vec<NumbersEft>,
    #[serde(default)]
    pub international: Vec<NumbersInternational>,
    #[serde(default)]
    pub bacs: Vec<NumbersBacs>,
}

/// `/auth/get`. bankgraph never calls it in production paths; it exists so tests can prove
/// that account and routing numbers held upstream never reach a client.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthGetResponse {
    pub accounts: Vec<Account>,
    pub numbers: AuthNumbers,
    pub item: Item,
    pub request_id: String,
}

impl std::fmt::Debug for AuthGetResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGetResponse")
            .field("accounts", &self.accounts.len())
            .field("numbers", &"[redacted]")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionsSyncOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_original_description: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_personal_finance_category: Option<bool>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionsSyncRequest {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TransactionsSyncOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionsSyncResponse {
    #[serde(default)]
    pub transactions_update_status: Option<String>,
    #[serde(default)]
    pub accounts: Vec<Account>,
    pub added: Vec<Transaction>,
    pub modified: Vec<Transaction>,
    pub removed: Vec<RemovedTransaction>,
    /// Plaid documents both "" and null for "no data yet"; both read as `""`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub next_cursor: String,
    pub has_more: bool,
    pub request_id: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransactionsGetOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Proxy (seed 000) paging: replaces `offset`, counts pages of `count` from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_personal_finance_category: Option<bool>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionsGetRequest {
    pub access_token: String,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TransactionsGetOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionsGetResponse {
    pub accounts: Vec<Account>,
    pub transactions: Vec<Transaction>,
    pub total_transactions: u32,
    pub item: Item,
    pub request_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstitutionsGetByIdOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_optional_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_status: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstitutionsGetByIdRequest {
    pub institution_id: String,
    pub country_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<InstitutionsGetByIdOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Institution {
    pub institution_id: String,
    pub name: String,
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default)]
    pub country_codes: Vec<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub primary_color: Option<String>,
    #[serde(default)]
    pub logo: Option<String>,
    #[serde(default)]
    pub routing_numbers: Vec<String>,
    #[serde(default)]
    pub dtc_numbers: Vec<String>,
    #[serde(default)]
    pub oauth: bool,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    /// Sent by current Plaid (and required by current SDKs); not in the 2020-09-14 spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_availability: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstitutionsGetByIdResponse {
    pub institution: Institution,
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookVerificationKeyGetRequest {
    pub key_id: String,
}

/// A P-256 public key as a JWK (`/webhook_verification_key/get`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jwk {
    pub alg: String,
    pub crv: String,
    pub kid: String,
    pub kty: String,
    #[serde(rename = "use")]
    pub key_use: String,
    pub x: String,
    pub y: String,
    pub created_at: i64,
    #[serde(default)]
    pub expired_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookVerificationKeyGetResponse {
    pub key: Jwk,
    pub request_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxPublicTokenCreateOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxPublicTokenCreateRequest {
    pub institution_id: String,
    pub initial_products: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SandboxPublicTokenCreateOptions>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxPublicTokenCreateResponse {
    pub public_token: String,
    pub request_id: String,
}

impl std::fmt::Debug for SandboxPublicTokenCreateResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxPublicTokenCreateResponse")
            .field("public_token", &"[redacted]")
            .field("request_id", &self.request_id)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxResetLoginResponse {
    pub reset_login: bool,
    pub request_id: String,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxFireWebhookRequest {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_type: Option<String>,
    pub webhook_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxFireWebhookResponse {
    pub webhook_fired: bool,
    pub request_id: String,
}

/// A webhook body as Plaid sends it. Code-specific fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEnvelope {
    pub webhook_type: String,
    pub webhook_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PlaidErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_from_the_docs_parses_and_keeps_its_amount_exactly() {
        let json = r#"{"account_id":"BxBXxLj1m4HMXBm9WZZmCWVbPjX16EHwv99vp","amount":2307.21,"iso_currency_code":"USD",
 "unofficial_currency_code":null,"category":["Shops","Computers and Electronics"],"category_id":"19013000",
 "check_number":null,"date":"2022-02-03","datetime":"2022-02-03T11:00:00Z","authorized_date":"2022-02-03",
 "authorized_datetime":"2022-02-03T10:34:50Z",
 "location":{"address":"300 Post St","city":"San Francisco","region":"CA","postal_code":"94108","country":"US",
   "lat":40.740352,"lon":-74.001761,"store_number":"1235"},
 "name":"Apple Store","merchant_name":"Apple",
 "payment_meta":{"by_order_of":null,"payee":null,"payer":null,"payment_method":null,"payment_processor":null,
   "ppd_id":null,"reason":null,"reference_number":null},
 "payment_channel":"in store","pending":false,"pending_transaction_id":null,
 "personal_finance_category":{"primary":"GENERAL_MERCHANDISE","detailed":"GENERAL_MERCHANDISE_ELECTRONICS"},
 "account_owner":null,"transaction_id":"lPNjeW1nR6CDn5okmGQ6hEpMo4lLNoSrzqDje","transaction_code":null,
 "some_future_field":{"x":1}}"#;
        let t: Transaction = serde_json::from_str(json).unwrap();
        assert_eq!(t.amount.to_string(), "2307.21");
        assert_eq!(t.merchant_name.as_deref(), Some("Apple"));
    }

    #[test]
    fn a_null_next_cursor_reads_as_empty() {
        let json = r#"{"added":[],"modified":[],"removed":[],"next_cursor":null,"has_more":false,"request_id":"x"}"#;
        let r: TransactionsSyncResponse = serde_json::from_str(json).unwrap();
        assert_eq!(r.next_cursor, "");
    }

    #[test]
    fn debug_output_never_shows_tokens() {
        let r = PublicTokenExchangeResponse {
            access_token: "access-sandbox-secret".into(),
            item_id: "i".into(),
            request_id: "r".into(),
        };
        assert!(!format!("{r:?}").contains("access-sandbox"));
        let l = LinkTokenCreateRequest { access_token: Some("access-sandbox-secret".into()), ..Default::default() };
        assert!(!format!("{l:?}").contains("access-sandbox"));
    }
}
