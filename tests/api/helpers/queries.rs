//! The contract's documents as tests send them, caller tokens, and reading an error's code.

use std::time::Duration;

use serde_json::Value;

pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// An HS256 token with the test secret, minted as `bankgraph token` mints one.
pub fn token_with(sub: &str, scope: &str, ttl: u64) -> String {
    bankgraph::auth::mint_hs256(JWT_SECRET.as_bytes(), sub, scope, Duration::from_secs(ttl), None, None).unwrap()
}

pub fn code(r: &Value) -> Option<String> {
    r["errors"][0]["extensions"]["code"].as_str().map(str::to_string)
}

pub const CREATE_LINK_TOKEN: &str = "mutation($input: CreatePlaidLinkTokenInput!) { createPlaidLinkToken(input: $input) { linkToken expiration requestId mode } }";
pub const COMPLETE_LINK: &str = "mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) {
    requiresAddress bankAccountId bankInstitutionAuthId newlyLinkedBankInstitutionAuthId bankInstitutionName platformItemId
    bankAccounts { bankInstitutionAuthId bankAccountId bankName lastFour type subtype } } }";
pub const ACCOUNTS: &str = "query($input: PlaidBankAccountFilterInput) { getPlaidBankAccounts(input: $input) {
    platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status } }";
pub const BALANCES: &str = "query($input: PlaidBankBalanceFilterInput) { getPlaidBankBalances(input: $input) {
    platformItemId bankInstitutionAuthId bankAccountId amount current currencyCode source trigger startedAt } }";
pub const TRANSACTIONS: &str = "query($input: PlaidBankTransactionFilterInput) { getPlaidBankTransactions(input: $input) {
    totalCount transactions { historicalBankTransactionId platformItemId bankInstitutionAuthId bankAccountId transactionId
    transactionStatus transactionType transactionDate amount currencyCode description merchantName category pending } } }";
pub const REFRESH: &str = "mutation { refreshPlaidBankConnections { status balances { bankAccountId amount current }
    verifyMembers { platformItemId bankInstitutionAuthId } } }";
pub const ADDRESS: &str =
    "mutation($input: CreatePlaidLinkAddressInput!) { createPlaidLinkAddress(input: $input) { addressId } }";
pub const REMOVE: &str =
    "mutation($input: RemovePlaidBankInstitutionInput!) { removePlaidBankInstitution(input: $input) {
    removed bankInstitutionAuthId } }";
