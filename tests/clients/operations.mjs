// The seed's operations (seeds/003), as an app writes them.
import { gql } from "@apollo/client/core/index.js";

export const CREATE_LINK_TOKEN = gql`
  mutation CreateLinkToken($input: CreatePlaidLinkTokenInput!) {
    createPlaidLinkToken(input: $input) { linkToken expiration requestId mode }
  }
`;

export const COMPLETE_LINK = gql`
  mutation CompleteLink($input: CompletePlaidLinkInput!) {
    completePlaidLink(input: $input) {
      requiresAddress bankAccountId bankInstitutionAuthId newlyLinkedBankInstitutionAuthId
      bankInstitutionName platformItemId
      bankAccounts { bankInstitutionAuthId bankAccountId bankName lastFour type subtype }
    }
  }
`;

export const ACCOUNTS = gql`
  query Accounts($input: PlaidBankAccountFilterInput) {
    getPlaidBankAccounts(input: $input) {
      platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status
    }
  }
`;

export const BALANCES = gql`
  query Balances($input: PlaidBankBalanceFilterInput) {
    getPlaidBankBalances(input: $input) {
      platformItemId bankInstitutionAuthId bankAccountId amount current currencyCode source trigger startedAt
    }
  }
`;

export const TRANSACTIONS = gql`
  query Transactions($input: PlaidBankTransactionFilterInput) {
    getPlaidBankTransactions(input: $input) {
      totalCount
      pageInfo { endCursor hasNextPage }
      transactions {
        historicalBankTransactionId transactionId transactionStatus transactionType transactionDate date
        amount currencyCode description merchantName category pending
      }
    }
  }
`;

export const REFRESH = gql`
  mutation Refresh {
    refreshPlaidBankConnections {
      status
      balances { bankAccountId amount current }
      verifyMembers { platformItemId bankInstitutionAuthId }
    }
  }
`;

export const ADDRESS = gql`
  mutation Address($input: CreatePlaidLinkAddressInput!) { createPlaidLinkAddress(input: $input) { addressId } }
`;

export const REMOVE = gql`
  mutation Remove($input: RemovePlaidBankInstitutionInput!) {
    removePlaidBankInstitution(input: $input) { removed bankInstitutionAuthId }
  }
`;

/** The refresh and removal a normalised cache needs (see cache-config.mjs). */
export const REFRESH_CACHED = gql`
  mutation RefreshCached {
    refreshPlaidBankConnections {
      status
      bankBalances {
        platformItemId bankInstitutionAuthId bankAccountId amount current currencyCode source trigger startedAt
      }
    }
  }
`;

export const REMOVE_CACHED = gql`
  mutation RemoveCached($input: RemovePlaidBankInstitutionInput!) {
    removePlaidBankInstitution(input: $input) { removed bankInstitutionAuthId removedBankAccountIds }
  }
`;
