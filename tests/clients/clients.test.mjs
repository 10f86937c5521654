// The seed's whole flow through the clients app developers use, configured as their docs
// configure them: Apollo Client 4 (default HTTP link, and with automatic persisted queries),
// Apollo Client 3, urql 6 with its defaults (queries over GET), and graphql-codegen generating
// types from live introspection with strictScalars. Every request goes to 127.0.0.1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { print } from "graphql";
import * as apollo4 from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import * as apollo3 from "apollo3/core/index.js";
import { Client, cacheExchange, fetchExchange } from "@urql/core";
import { generate } from "@graphql-codegen/cli";
import { cacheExchange as graphcache } from "@urql/exchange-graphcache";
import { apolloTypePolicies, evictRemoved, graphcacheKeys, graphcacheUpdates } from "./cache-config.mjs";
import { startServer } from "./server.mjs";
import * as ops from "./operations.mjs";

let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

/** The seed's flow, through `run(document, variables, kind)` → data (throws on any error),
 * against `srv` (the shared server unless given). */
async function seedFlow(run, srv = server) {
  const created = await run(ops.CREATE_LINK_TOKEN, { input: {} }, "mutation");
  assert.equal(created.createPlaidLinkToken.mode, "CREATE");
  const publicToken = await srv.finishLink(created.createPlaidLinkToken.linkToken);
  const done = (await run(ops.COMPLETE_LINK, { input: { publicToken } }, "mutation")).completePlaidLink;
  assert.ok(done.bankAccounts.length > 0);
  const connection = done.bankInstitutionAuthId;

  const accounts = (await run(ops.ACCOUNTS, { input: {} }, "query")).getPlaidBankAccounts;
  assert.equal(accounts.length, done.bankAccounts.length);
  assert.ok(accounts.every((a) => a.status === "ACTIVE"));
  const balances = (await run(ops.BALANCES, { input: { bankInstitutionAuthId: connection } }, "query")).getPlaidBankBalances;
  assert.equal(balances.length, accounts.length);
  assert.equal(typeof balances[0].current, "string", "money is a decimal string");

  let page;
  for (let i = 0; i < 100; i++) {
    page = (await run(ops.TRANSACTIONS, { input: { paginate: { limit: 5 } } }, "query")).getPlaidBankTransactions;
    if (page.totalCount > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(page.totalCount > 0, "the history arrived");
  assert.equal(page.transactions.length, 5);
  const next = (await run(ops.TRANSACTIONS, { input: { paginate: { limit: 5, after: page.pageInfo.endCursor } } }, "query"))
    .getPlaidBankTransactions;
  assert.ok(!next.transactions.some((t) => page.transactions.some((p) => p.historicalBankTransactionId === t.historicalBankTransactionId)));

  const refreshed = (await run(ops.REFRESH, {}, "mutation")).refreshPlaidBankConnections;
  assert.equal(refreshed.status, "REFRESHED");
  const address = {
    streetAddressLine1: "123 Main St",
    city: "New York",
    state: "NY",
    postalCode: "10001",
    country: "US",
  };
  const added = await run(ops.ADDRESS, { input: { bankInstitutionAuthId: connection, address } }, "mutation");
  assert.ok(added.createPlaidLinkAddress.addressId);
  const removed = await run(ops.REMOVE, { input: { bankInstitutionAuthId: connection } }, "mutation");
  assert.equal(removed.removePlaidBankInstitution.removed, true);
  const after = (await run(ops.ACCOUNTS, { input: {} }, "query")).getPlaidBankAccounts;
  assert.deepEqual(after, []);
}

function apolloRunner(client) {
  return async (document, variables, kind) => {
    const r =
      kind === "query"
        ? await client.query({ query: document, variables, fetchPolicy: "network-only" })
        : await client.mutate({ mutation: document, variables });
    assert.equal(r.errors, undefined, JSON.stringify(r.errors));
    return r.data;
  };
}

/** fetch that records how each request went out. */
function recordingFetch(seen) {
  return async (url, init) => {
    seen.push({ method: init?.method ?? "GET", url: String(url), body: init?.body ? String(init.body) : "" });
    return fetch(url, init);
  };
}

test("Apollo Client 4 with its default HTTP link", async () => {
  const seen = [];
  const client = new apollo4.ApolloClient({
    link: new apollo4.HttpLink({
      uri: server.graphql,
      headers: { authorization: `Bearer ${server.token("apollo4")}` },
      fetch: recordingFetch(seen),
    }),
    cache: new apollo4.InMemoryCache(),
  });
  await seedFlow(apolloRunner(client));
  assert.ok(seen.length > 8 && seen.every((s) => s.method === "POST"));
});

test("Apollo Client 4 with useGETForQueries", async () => {
  const seen = [];
  const client = new apollo4.ApolloClient({
    link: new apollo4.HttpLink({
      uri: server.graphql,
      useGETForQueries: true,
      headers: { authorization: `Bearer ${server.token("apollo4-get")}` },
      fetch: recordingFetch(seen),
    }),
    cache: new apollo4.InMemoryCache(),
  });
  await seedFlow(apolloRunner(client));
  assert.ok(seen.some((s) => s.method === "GET"), "queries went over GET");
  assert.ok(seen.filter((s) => s.method === "POST").every((s) => s.body.includes("mutation")), "mutations over POST");
});

test("Apollo Client 4 with automatic persisted queries", async () => {
  const seen = [];
  const sha256 = (q) => createHash("sha256").update(q).digest("hex");
  const http = new apollo4.HttpLink({
    uri: server.graphql,
    headers: { authorization: `Bearer ${server.token("apollo4-apq")}` },
    fetch: recordingFetch(seen),
  });
  const client = new apollo4.ApolloClient({
    link: new PersistedQueryLink({ sha256 }).concat(http),
    cache: new apollo4.InMemoryCache(),
  });
  await seedFlow(apolloRunner(client));
  // Each operation went out first by hash alone, was not known, then with its text.
  const bodies = seen.map((s) => JSON.parse(s.body));
  assert.ok(bodies.some((b) => !b.query) && bodies.some((b) => b.query && b.extensions?.persistedQuery));
  // Now the server knows the text: the hash alone is answered.
  const before = seen.length;
  const again = await client.query({ query: ops.ACCOUNTS, variables: { input: {} }, fetchPolicy: "network-only" });
  assert.deepEqual(again.data.getPlaidBankAccounts, []);
  assert.equal(seen.length, before + 1, "one request");
  assert.equal(JSON.parse(seen.at(-1).body).query, undefined, "by hash alone");
});

test("Apollo Client 3 with its default HTTP link", async () => {
  const client = new apollo3.ApolloClient({
    link: new apollo3.HttpLink({ uri: server.graphql, headers: { authorization: `Bearer ${server.token("apollo3")}` } }),
    cache: new apollo3.InMemoryCache(),
  });
  await seedFlow(apolloRunner(client));
});

test("urql 6 with its defaults (queries over GET)", async () => {
  const seen = [];
  const client = new Client({
    url: server.graphql,
    exchanges: [cacheExchange, fetchExchange],
    fetchOptions: { headers: { authorization: `Bearer ${server.token("urql")}` } },
    fetch: recordingFetch(seen),
  });
  await seedFlow(async (document, variables, kind) => {
    const r =
      kind === "query"
        ? await client.query(document, variables, { requestPolicy: "network-only" }).toPromise()
        : await client.mutation(document, variables).toPromise();
    assert.equal(r.error, undefined, String(r.error));
    return r.data;
  });
  assert.ok(seen.some((s) => s.method === "GET"), "urql sent queries over GET");
  assert.ok(seen.filter((s) => s.body.includes("mutation")).every((s) => s.method === "POST"));
});

test("graphql-codegen generates types from live introspection with strictScalars", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bankgraph-codegen-"));
  try {
    const documents = join(dir, "operations.graphql");
    writeFileSync(documents, Object.values(ops).map((d) => print(d)).join("\n"));
    const out = join(dir, "types.ts");
    await generate(
      {
        schema: server.graphql,
        documents,
        silent: true,
        generates: {
          [out]: {
            plugins: ["typescript", "typescript-operations"],
            config: { strictScalars: true, scalars: { DateTime: "string", Decimal: "string" } },
          },
        },
      },
      true,
    );
    const types = readFileSync(out, "utf8");
    assert.match(types, /DateTime: \{ input: string; output: string; \}/);
    assert.match(types, /Decimal: \{ input: string; output: string; \}/);
    assert.match(types, /export type AccountsQuery = /);
    assert.match(types, /\/\*\* The bank account \(ours; stable across relinks\)\. \*\//, "descriptions become docs");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Links a bank for `client` through `run`; returns the connection id. */
async function linkWith(run) {
  const created = await run(ops.CREATE_LINK_TOKEN, { input: {} }, "mutation");
  const publicToken = await server.finishLink(created.createPlaidLinkToken.linkToken);
  return (await run(ops.COMPLETE_LINK, { input: { publicToken } }, "mutation")).completePlaidLink.bankInstitutionAuthId;
}

test("Apollo's normalised cache follows a refresh and forgets what a removal removed", async () => {
  const client = new apollo4.ApolloClient({
    link: new apollo4.HttpLink({ uri: server.graphql, headers: { authorization: `Bearer ${server.token("apollo-cache")}` } }),
    cache: new apollo4.InMemoryCache({ typePolicies: apolloTypePolicies }),
  });
  const run = apolloRunner(client);
  const connection = await linkWith(run);
  const vars = { input: {} };
  await client.query({ query: ops.ACCOUNTS, variables: vars });
  const first = await client.query({ query: ops.BALANCES, variables: vars });
  assert.ok(first.data.getPlaidBankBalances.every((b) => b.trigger === "LINK"));
  await client.mutate({ mutation: ops.REFRESH_CACHED });
  const cached = client.readQuery({ query: ops.BALANCES, variables: vars });
  assert.ok(cached.getPlaidBankBalances.length > 0);
  assert.ok(cached.getPlaidBankBalances.every((b) => b.trigger === "REFRESH"), "the cached balances were updated in place");
  await client.mutate({
    mutation: ops.REMOVE_CACHED,
    variables: { input: { bankInstitutionAuthId: connection } },
    update: (cache, { data }) => evictRemoved(cache, data.removePlaidBankInstitution),
  });
  const accounts = client.readQuery({ query: ops.ACCOUNTS, variables: vars });
  assert.deepEqual(accounts?.getPlaidBankAccounts ?? [], [], "the removed accounts are gone from the cache");
});

test("urql Graphcache follows a refresh and forgets what a removal removed", async () => {
  const client = new Client({
    url: server.graphql,
    exchanges: [graphcache({ keys: graphcacheKeys, updates: graphcacheUpdates }), fetchExchange],
    fetchOptions: { headers: { authorization: `Bearer ${server.token("urql-cache")}` } },
  });
  const run = async (document, variables, kind) => {
    const r = kind === "query" ? await client.query(document, variables).toPromise() : await client.mutation(document, variables).toPromise();
    assert.equal(r.error, undefined, String(r.error));
    return r.data;
  };
  const connection = await linkWith(run);
  const vars = { input: {} };
  assert.ok((await run(ops.BALANCES, vars, "query")).getPlaidBankBalances.every((b) => b.trigger === "LINK"));
  await run(ops.REFRESH_CACHED, {}, "mutation");
  const cached = await client.query(ops.BALANCES, vars, { requestPolicy: "cache-only" }).toPromise();
  assert.ok(cached.data.getPlaidBankBalances.every((b) => b.trigger === "REFRESH"), "updated in the cache");
  assert.ok((await run(ops.ACCOUNTS, vars, "query")).getPlaidBankAccounts.length > 0);
  await run(ops.REMOVE_CACHED, { input: { bankInstitutionAuthId: connection } }, "mutation");
  assert.deepEqual((await run(ops.ACCOUNTS, vars, "query")).getPlaidBankAccounts, [], "gone after the removal");
});

/** A persisted-documents manifest of the seed's operations, as graphql-codegen's client preset
 * writes one: `{ "<sha256 of the printed document>": "<document>" }`. */
function seedManifest() {
  const docs = Object.values(ops).map((d) => print(d));
  return Object.fromEntries(docs.map((d) => [createHash("sha256").update(d).digest("hex"), d]));
}

/** A client that sends documents by hash alone, as persisted-document clients do. */
function byHash(url, token) {
  return async (document, variables) => {
    const text = print(document);
    const hash = createHash("sha256").update(text).digest("hex");
    const r = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ variables, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } }),
    });
    const body = await r.json();
    assert.equal(body.errors, undefined, `${text}: ${JSON.stringify(body.errors)}`);
    return body.data;
  };
}

test("trusted documents: a manifest of the seed's operations runs all of them and nothing else", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bankgraph-trusted-"));
  const manifest = join(dir, "persisted-documents.json");
  writeFileSync(manifest, JSON.stringify(seedManifest()));
  const adhoc = { query: "{ getPlaidBankAccounts { bankAccountId lastFour } }" };
  for (const mode of ["enforce", "log"]) {
    const trusted = await startServer([`--trusted-documents=${manifest}`, `--trusted-documents-mode=${mode}`]);
    try {
      const token = trusted.token(`trusted-${mode}`);
      await seedFlow(byHash(trusted.graphql, token), trusted);
      const r = await fetch(trusted.graphql, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify(adhoc),
      });
      const body = await r.json();
      if (mode === "enforce") {
        assert.equal(body.errors?.[0]?.extensions?.code, "PERSISTED_QUERY_NOT_IN_LIST", JSON.stringify(body));
      } else {
        assert.equal(body.errors, undefined, JSON.stringify(body));
        const metrics = await (await fetch(`${trusted.internal}/metrics`)).text();
        assert.match(metrics, /bankgraph_untrusted_documents_total\{mode="log"\} 1/);
      }
    } finally {
      trusted.stop();
    }
  }
  rmSync(dir, { recursive: true, force: true });
});
