// Normalised-cache configuration for bankgraph's schema, as the README publishes it: what
// identifies each type, and what to evict after a removal. With it, cached accounts, balances
// and transactions update after refreshPlaidBankConnections (ask for `bankBalances` in it) and
// disappear after removePlaidBankInstitution (ask for `removedBankAccountIds`).

/** Apollo Client: `new InMemoryCache({ typePolicies: apolloTypePolicies })`. */
export const apolloTypePolicies = {
  PlaidBankAccount: { keyFields: ["bankAccountId"] },
  PlaidBankAccountSummary: { keyFields: ["bankAccountId"] },
  PlaidBankBalance: { keyFields: ["bankAccountId"] },
  PlaidRefreshBalance: { keyFields: ["bankAccountId"] },
  PlaidBankTransaction: { keyFields: ["historicalBankTransactionId"] },
  PlaidVerifyMember: { keyFields: ["bankInstitutionAuthId"] },
  // Pages, their windows, tokens and payloads are values, not entities.
  PlaidBankTransactionPage: { keyFields: false },
  PageInfo: { keyFields: false },
  PlaidLinkToken: { keyFields: false },
  CompletePlaidLinkPayload: { keyFields: false },
  RefreshPlaidBankConnectionsPayload: { keyFields: false },
  CreatePlaidLinkAddressPayload: { keyFields: false },
  RemovePlaidBankInstitutionPayload: { keyFields: false },
};

/** Apollo Client: call from the removal mutation's `update(cache, { data })`. */
export function evictRemoved(cache, payload) {
  for (const bankAccountId of payload.removedBankAccountIds) {
    for (const __typename of ["PlaidBankAccount", "PlaidBankBalance", "PlaidBankAccountSummary", "PlaidRefreshBalance"]) {
      cache.evict({ id: cache.identify({ __typename, bankAccountId }) });
    }
  }
  cache.gc();
}

/** urql Graphcache: `cacheExchange({ keys: graphcacheKeys, updates: graphcacheUpdates })`. */
export const graphcacheKeys = {
  PlaidBankAccount: (a) => a.bankAccountId,
  PlaidBankAccountSummary: (a) => a.bankAccountId,
  PlaidBankBalance: (b) => b.bankAccountId,
  PlaidRefreshBalance: (b) => b.bankAccountId,
  PlaidBankTransaction: (t) => t.historicalBankTransactionId,
  PlaidVerifyMember: (v) => v.bankInstitutionAuthId,
  PlaidBankTransactionPage: () => null,
  PageInfo: () => null,
  PlaidLinkToken: () => null,
  CompletePlaidLinkPayload: () => null,
  RefreshPlaidBankConnectionsPayload: () => null,
  CreatePlaidLinkAddressPayload: () => null,
  RemovePlaidBankInstitutionPayload: () => null,
};

export const graphcacheUpdates = {
  Mutation: {
    removePlaidBankInstitution(result, _args, cache) {
      for (const bankAccountId of result.removePlaidBankInstitution.removedBankAccountIds) {
        for (const __typename of ["PlaidBankAccount", "PlaidBankBalance", "PlaidBankAccountSummary", "PlaidRefreshBalance"]) {
          cache.invalidate({ __typename, bankAccountId });
        }
      }
    },
  },
};
