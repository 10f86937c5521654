// Live connection events through the graphql-ws client (the graphql-transport-ws protocol), as
// an app configures it: the token in connectionParams, `ws` as the socket in Node. Also Apollo
// Client 4's GraphQLWsLink over the same client. Every socket and request goes to 127.0.0.1.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import * as apollo4 from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { startServer } from "./server.mjs";

const EVENTS = `subscription Events($input: PlaidConnectionEventsInput) {
  plaidConnectionEvents(input: $input) {
    eventId type occurredAt platformItemId bankInstitutionAuthId status transactionCount addedCount modifiedCount removedCount
  }
}`;
const CREATE_LINK_TOKEN = `mutation { createPlaidLinkToken(input: {}) { linkToken } }`;
const COMPLETE_LINK = `mutation($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) { bankInstitutionAuthId platformItemId } }`;
const REMOVE = `mutation($input: RemovePlaidBankInstitutionInput!) { removePlaidBankInstitution(input: $input) { removed } }`;
const TOTAL = `{ getPlaidBankTransactions(input: { paginate: { limit: 1 } }) { totalCount } getPlaidBankAccounts { historyStatus } }`;

let server;
before(async () => {
  server = await startServer();
});
after(() => server?.stop());

function wsUrl() {
  const url = server.graphql.replace(/^http:/, "ws:");
  assert.equal(new URL(url).hostname, "127.0.0.1", "sockets stay on this machine");
  return url;
}

function client(token, extra = {}) {
  return createClient({
    url: wsUrl(),
    webSocketImpl: WebSocket,
    connectionParams: token === undefined ? undefined : { Authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: true,
    ...extra,
  });
}

async function gql(token, query, variables = {}) {
  const r = await fetch(server.graphql, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await r.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/** A new link; a second one at the same institution would repair the first, so tests pick. */
async function link(token, institution = "ins_109508") {
  const { createPlaidLinkToken } = await gql(token, CREATE_LINK_TOKEN);
  const publicToken = await server.finishLink(createPlaidLinkToken.linkToken, { institution_id: institution });
  return (await gql(token, COMPLETE_LINK, { input: { publicToken } })).completePlaidLink;
}

/** Collects a subscription's events; `next(pred)` resolves with the first (new) one matching. */
function collect(c, variables = {}) {
  const events = [];
  const waiters = [];
  let failure = null;
  const started = new Promise((resolve) => {
    const dispose = c.subscribe(
      { query: EVENTS, variables },
      {
        next: (r) => {
          if (r.errors) failure = r.errors;
          else events.push(r.data.plaidConnectionEvents);
          for (const w of [...waiters]) w();
        },
        error: (e) => {
          failure = e;
          for (const w of [...waiters]) w();
        },
        complete: () => {},
      },
    );
    resolve(dispose);
  });
  let seen = 0;
  return {
    events,
    started,
    failure: () => failure,
    async next(pred = () => true, ms = 20000) {
      const deadline = Date.now() + ms;
      for (;;) {
        while (seen < events.length) {
          const e = events[seen++];
          if (pred(e)) return e;
        }
        if (failure) throw new Error(`subscription failed: ${JSON.stringify(failure)}`);
        if (Date.now() > deadline) throw new Error(`no matching event; got ${JSON.stringify(events)}`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 100);
        });
      }
    },
  };
}

/** The bank asks the user to log in again (the emulator's webhook reaches bankgraph). */
async function resetLogin(itemId) {
  const item = await (await fetch(`${server.emulator}/emulator/items/${itemId}`)).json();
  const r = await fetch(`${server.emulator}/sandbox/item/reset_login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ client_id: "emulator_client_id", secret: "emulator_sandbox_secret", access_token: item.access_token }),
  });
  assert.equal(r.status, 200, JSON.stringify(await r.json()));
}

/** From this user's first event on: nothing is missed whenever the subscription starts. */
const FROM_THE_START = { input: { after: "evt_0000000000000000" } };

test("a subscriber sees LINKED, progress and HISTORY_READY, then status changes and removal; another user sees none of it", async () => {
  const alice = server.token("ws-alice");
  const mallory = server.token("ws-mallory");
  const mine = client(alice);
  const theirs = client(mallory);
  const a = collect(mine, FROM_THE_START);
  const m = collect(theirs, FROM_THE_START);

  const done = await link(alice);
  const linked = await a.next((e) => e.type === "LINKED");
  assert.equal(linked.bankInstitutionAuthId, done.bankInstitutionAuthId);
  assert.equal(linked.platformItemId, done.platformItemId);
  const ready = await a.next((e) => e.type === "HISTORY_READY");
  // The history arrives in pages: progress first, counting up to what HISTORY_READY reports.
  const progress = a.events.filter((e) => e.type === "HISTORY_SYNC_PROGRESS").map((e) => e.transactionCount);
  assert.ok(progress.length > 0, "the first sync reported its progress");
  assert.ok(progress.every((n, i) => i === 0 || n > progress[i - 1]) && progress.at(-1) < ready.transactionCount);
  const history = await (await fetch(`${server.emulator}/emulator/items/${done.platformItemId}/transactions`)).json();
  assert.equal(ready.transactionCount, history.transactions.length, "the event counts the emulator's whole history");
  const read = await gql(alice, TOTAL);
  assert.equal(read.getPlaidBankTransactions.totalCount, history.transactions.length, "and reads have it all");
  assert.ok(read.getPlaidBankAccounts.every((acc) => acc.historyStatus === "READY"));

  await resetLogin(done.platformItemId);
  const changed = await a.next((e) => e.type === "STATUS_CHANGED");
  assert.equal(changed.status, "LOGIN_REQUIRED");

  await gql(alice, REMOVE, { input: { bankInstitutionAuthId: done.bankInstitutionAuthId, reason: "USER_REQUESTED" } });
  const removed = await a.next((e) => e.type === "REMOVED");
  assert.equal(removed.bankInstitutionAuthId, done.bankInstitutionAuthId);

  assert.deepEqual(m.events, [], "the other user saw nothing");
  assert.equal(m.failure(), null);
  // Event ids are opaque and ordered.
  const ids = a.events.map((e) => e.eventId);
  assert.deepEqual([...ids].sort(), ids);
  await mine.dispose();
  await theirs.dispose();
});

test("no token, a bad token and a token without the scope are refused at connection_init with 4403", async () => {
  for (const token of [undefined, "not-a-jwt", server.token("ws-scopeless", "READ_ONLY")]) {
    const c = client(token);
    const closed = new Promise((resolve) => c.on("closed", resolve));
    const s = collect(c);
    await s.started;
    const event = await closed;
    assert.equal(event.code, 4403, `${token}: ${event.code} ${event.reason}`);
    await c.dispose();
  }
});

test("a client that reconnects with the last eventId gets what it missed, in order, then live events", async () => {
  const bob = server.token("ws-bob");
  const first = client(bob);
  const s1 = collect(first, FROM_THE_START);
  const one = await link(bob);
  await s1.next((e) => e.type === "HISTORY_READY" && e.bankInstitutionAuthId === one.bankInstitutionAuthId);
  const two = await link(bob, "ins_109511");
  const last = await s1.next((e) => e.type === "HISTORY_READY" && e.bankInstitutionAuthId === two.bankInstitutionAuthId);
  await first.dispose();

  // Three changes while it is away: a removal, a status change, a removal.
  await gql(bob, REMOVE, { input: { bankInstitutionAuthId: two.bankInstitutionAuthId, reason: "USER_REQUESTED" } });
  await resetLogin(one.platformItemId);
  for (let i = 0; i < 200; i++) {
    const read = await gql(bob, `{ getPlaidBankAccounts { status } }`);
    if (read.getPlaidBankAccounts.every((acc) => acc.status === "LOGIN_REQUIRED")) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await gql(bob, REMOVE, { input: { bankInstitutionAuthId: one.bankInstitutionAuthId, reason: "USER_REQUESTED" } });

  const again = client(bob);
  const s2 = collect(again, { input: { after: last.eventId } });
  const a = await s2.next();
  const b = await s2.next();
  const c = await s2.next();
  assert.deepEqual(
    [a, b, c].map((e) => [e.type, e.bankInstitutionAuthId, e.status]),
    [
      ["REMOVED", two.bankInstitutionAuthId, null],
      ["STATUS_CHANGED", one.bankInstitutionAuthId, "LOGIN_REQUIRED"],
      ["REMOVED", one.bankInstitutionAuthId, null],
    ],
    JSON.stringify(s2.events),
  );
  // Then live ones.
  const three = await link(bob, "ins_109512");
  const live = await s2.next();
  assert.deepEqual([live.type, live.bankInstitutionAuthId], ["LINKED", three.bankInstitutionAuthId]);
  assert.ok(live.eventId > c.eventId);
  await again.dispose();
});

test("Apollo Client 4 with GraphQLWsLink receives the same events", async () => {
  const carol = server.token("ws-carol");
  const wsClient = client(carol);
  const apollo = new apollo4.ApolloClient({ link: new GraphQLWsLink(wsClient), cache: new apollo4.InMemoryCache() });
  const seen = [];
  const sub = apollo.subscribe({ query: apollo4.gql(EVENTS), variables: FROM_THE_START }).subscribe({
    next: (r) => seen.push(r.data.plaidConnectionEvents),
  });
  const done = await link(carol);
  for (let i = 0; i < 200 && !seen.some((e) => e.type === "HISTORY_READY"); i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(seen[0].type, "LINKED");
  assert.equal(seen[0].__typename, "PlaidConnectionEvent");
  assert.ok(seen.some((e) => e.type === "HISTORY_READY" && e.bankInstitutionAuthId === done.bankInstitutionAuthId));
  sub.unsubscribe();
  await wsClient.dispose();
});
