// The bankgraph demo: everything goes through the public GraphQL API with the operations of the
// contract, as an app would send them; Link is Plaid's web SDK (the emulator's offline). No
// build step, no framework, and nothing from the network becomes markup (textContent only).
(function () {
  "use strict";
  var GRAPHQL = "/api/v1/graphql";
  var PAGE_SIZE = 25;
  var body = document.body;
  var LINK_SCRIPT = body.getAttribute("data-link-script");
  var DEV_SIGN_IN = body.getAttribute("data-dev-sign-in") === "true";
  var EMULATOR = body.getAttribute("data-emulator") === "true";
  var $ = function (id) { return document.getElementById(id); };

  var auth = JSON.parse(sessionStorage.getItem("bankgraph-demo-auth") || "null");
  var offset = 0;
  var accountNames = {};
  var watching = null;

  // --- The operations (the contract's, as in the seed's samples) ---

  var Q = {
    createLinkToken:
      "mutation CreatePlaidLinkToken($input: CreatePlaidLinkTokenInput!) { createPlaidLinkToken(input: $input) { linkToken mode } }",
    completeLink:
      "mutation CompletePlaidLink($input: CompletePlaidLinkInput!) { completePlaidLink(input: $input) { requiresAddress bankInstitutionAuthId newlyLinkedBankInstitutionAuthId bankAccountId platformItemId bankInstitutionName bankAccounts { bankInstitutionAuthId bankAccountId bankName lastFour type subtype } } }",
    accounts:
      "query GetPlaidBankAccounts($input: PlaidBankAccountFilterInput) { getPlaidBankAccounts(input: $input) { platformItemId bankInstitutionAuthId bankInstitutionName bankAccountId accountName lastFour type subtype status historyStatus lastSyncedAt } }",
    balances:
      "query GetPlaidBankBalances($input: PlaidBankBalanceFilterInput) { getPlaidBankBalances(input: $input) { platformItemId bankInstitutionAuthId bankAccountId amount current currencyCode source trigger startedAt } }",
    transactions:
      "query GetPlaidBankTransactions($input: PlaidBankTransactionFilterInput) { getPlaidBankTransactions(input: $input) { totalCount transactions { historicalBankTransactionId bankAccountId transactionId transactionStatus transactionDate date amount currencyCode description merchantName category pending } } }",
    refresh:
      "mutation RefreshPlaidBankConnections { refreshPlaidBankConnections { status balances { bankAccountId amount current } verifyMembers { platformItemId bankInstitutionAuthId } } }",
    address:
      "mutation CreatePlaidLinkAddress($input: CreatePlaidLinkAddressInput!) { createPlaidLinkAddress(input: $input) { __typename } }",
    remove:
      "mutation RemovePlaidBankInstitution($input: RemovePlaidBankInstitutionInput!) { removePlaidBankInstitution(input: $input) { __typename } }",
  };

  function GraphQLError(message, code) {
    var e = new Error(message);
    e.code = code;
    return e;
  }

  async function graphql(query, variables) {
    var r = await fetch(GRAPHQL, {
      method: "POST",
      headers: {
        Authorization: "Bearer " + (auth && auth.token),
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
      },
      body: JSON.stringify({ query: query, variables: variables || {} }),
    });
    var payload = await r.json().catch(function () { return {}; });
    if (payload.errors && payload.errors.length) {
      var first = payload.errors[0];
      var code = first.extensions && first.extensions.code;
      if (code === "UNAUTHENTICATED") signOut("Your session ended; sign in again.");
      throw GraphQLError(first.message + (code ? " (" + code + ")" : ""), code);
    }
    if (!r.ok || !payload.data) throw GraphQLError("The request failed with HTTP " + r.status + ".");
    return payload.data;
  }

  // --- Feedback ---

  function say(text) {
    $("status").textContent = text || "";
  }

  function problem(err) {
    var p = $("problem");
    if (!err) {
      p.hidden = true;
      p.textContent = "";
      return;
    }
    p.textContent = err.message || String(err);
    p.hidden = false;
  }

  async function attempt(button, work) {
    problem(null);
    if (button) button.disabled = true;
    try {
      return await work();
    } catch (e) {
      problem(e);
    } finally {
      if (button) button.disabled = false;
    }
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] === null || attrs[k] === undefined) continue;
      if (k === "text") node.textContent = attrs[k];
      else if (k === "on") for (var ev in attrs.on) node.addEventListener(ev, attrs.on[ev]);
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function money(amount, currency) {
    if (amount === null || amount === undefined) return "—";
    return amount + (currency ? " " + currency : "");
  }

  // --- Signing in ---

  function showSignedIn() {
    var signedIn = !!auth;
    $("sign-in").hidden = signedIn;
    $("banks").hidden = !signedIn;
    $("history").hidden = !signedIn;
    $("who").hidden = !signedIn;
    $("dev-sign-in").hidden = !DEV_SIGN_IN;
    $("token-sign-in").hidden = DEV_SIGN_IN;
    $("who-name").textContent = signedIn ? "Signed in as " + auth.name : "";
  }

  function signOut(message) {
    auth = null;
    sessionStorage.removeItem("bankgraph-demo-auth");
    showSignedIn();
    say(message || "Signed out.");
  }

  $("dev-sign-in").addEventListener("submit", function (e) {
    e.preventDefault();
    var button = e.target.querySelector("button");
    attempt(button, async function () {
      var name = $("user-name").value.trim();
      var r = await fetch("/demo/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: name }),
      });
      var payload = await r.json().catch(function () { return {}; });
      if (!r.ok) throw new Error((payload.errors && payload.errors[0].message) || "Sign-in failed (HTTP " + r.status + ").");
      auth = { token: payload.token, name: name, expiresAt: payload.expiresAt };
      sessionStorage.setItem("bankgraph-demo-auth", JSON.stringify(auth));
      showSignedIn();
      say("Signed in as " + name + ".");
      await load();
    });
  });

  $("token-sign-in").addEventListener("submit", function (e) {
    e.preventDefault();
    attempt(e.target.querySelector("button"), async function () {
      auth = { token: $("access-token").value.trim(), name: "the token's user" };
      await graphql("{ __typename }");
      sessionStorage.setItem("bankgraph-demo-auth", JSON.stringify(auth));
      showSignedIn();
      await load();
    });
  });

  $("sign-out").addEventListener("click", function () { signOut(); });

  // --- Link ---

  var linkReady = null;
  function loadLink() {
    if (!linkReady) {
      linkReady = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = LINK_SCRIPT;
        s.onload = function () { resolve(window.Plaid); };
        s.onerror = function () { linkReady = null; reject(new Error("Plaid Link's script did not load from " + LINK_SCRIPT + ".")); };
        document.head.appendChild(s);
      });
    }
    return linkReady;
  }

  function openLink(token, platformItemId, receivedRedirectUri) {
    return loadLink().then(function (Plaid) {
      var handler = Plaid.create({
        token: token,
        receivedRedirectUri: receivedRedirectUri || undefined,
        onSuccess: function (publicToken, metadata) {
          sessionStorage.removeItem("bankgraph-demo-link");
          handler.destroy();
          attempt(null, function () { return finishLink(publicToken, platformItemId, metadata); });
        },
        onExit: function (error, metadata) {
          sessionStorage.removeItem("bankgraph-demo-link");
          handler.destroy();
          if (error) problem(new Error("Link ended: " + (error.display_message || error.error_message) + " (" + error.error_code + ")"));
          else say("Link closed (" + metadata.status + ").");
        },
      });
      handler.open();
    });
  }

  async function startLink(platformItemId, button) {
    await attempt(button, async function () {
      var input = { deviceOs: "WEB" };
      if (platformItemId) input.platformItemId = platformItemId;
      var data = await graphql(Q.createLinkToken, { input: input });
      // An OAuth bank sends the browser away; the token is needed again when it comes back.
      sessionStorage.setItem("bankgraph-demo-link", JSON.stringify({ token: data.createPlaidLinkToken.linkToken, platformItemId: platformItemId || null }));
      await openLink(data.createPlaidLinkToken.linkToken, platformItemId);
    });
  }

  async function finishLink(publicToken, platformItemId, metadata) {
    say("Saving the connection to " + metadata.institution.name + "…");
    var input = { publicToken: publicToken };
    if (platformItemId) input.platformItemId = platformItemId;
    var result = (await graphql(Q.completeLink, { input: input })).completePlaidLink;
    var id = result.bankInstitutionAuthId || result.newlyLinkedBankInstitutionAuthId;
    say((platformItemId ? "Relinked " : "Linked ") + (result.bankInstitutionName || metadata.institution.name) + ": " + result.bankAccounts.length + " accounts.");
    if (result.requiresAddress) askAddress(id, result.bankInstitutionName || metadata.institution.name);
    await load();
    watchHistory();
  }

  $("link-bank").addEventListener("click", function (e) { startLink(null, e.target); });

  // --- Address ---

  function askAddress(connectionId, bankName) {
    var box = $("address");
    var field = function (label, name, required, value) {
      return el("label", {}, [label, el("input", { name: name, required: required ? "" : null, value: value || null })]);
    };
    var form = el("form", {}, [
      el("h3", { text: "A postal address for " + bankName }),
      el("p", { class: "muted", text: "bankgraph needs an address on file for this connection." }),
      field("Street address", "streetAddressLine1", true),
      field("Apartment, suite (optional)", "streetAddressLine2", false),
      field("City", "city", true),
      field("State", "state", true),
      field("Postal code", "postalCode", true),
      field("Country", "country", true, "US"),
      el("button", { type: "submit", text: "Save address" }),
    ]);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      attempt(form.querySelector("button"), async function () {
        var address = {};
        Array.prototype.forEach.call(form.querySelectorAll("input"), function (i) {
          if (i.value.trim()) address[i.name] = i.value.trim();
        });
        await graphql(Q.address, { input: { bankInstitutionAuthId: connectionId, address: address } });
        box.hidden = true;
        box.replaceChildren();
        say("Address saved for " + bankName + ".");
      });
    });
    box.replaceChildren(form);
    box.hidden = false;
    form.querySelector("input").focus();
  }

  // --- Reading ---

  var NEEDS_RELINK = ["LOGIN_REQUIRED", "PENDING_EXPIRATION", "PENDING_DISCONNECT"];

  async function load() {
    if (!auth) return;
    var accounts = (await graphql(Q.accounts, {})).getPlaidBankAccounts;
    var balances = (await graphql(Q.balances, {})).getPlaidBankBalances;
    var byAccount = {};
    balances.forEach(function (b) { byAccount[b.bankAccountId] = b; });
    var connections = [];
    var index = {};
    accountNames = {};
    accounts.forEach(function (a) {
      accountNames[a.bankAccountId] = (a.accountName || a.type) + (a.lastFour ? " ••" + a.lastFour : "");
      if (!index[a.bankInstitutionAuthId]) {
        index[a.bankInstitutionAuthId] = { id: a.bankInstitutionAuthId, item: a.platformItemId, name: a.bankInstitutionName, status: a.status, history: a.historyStatus, synced: a.lastSyncedAt, accounts: [] };
        connections.push(index[a.bankInstitutionAuthId]);
      }
      index[a.bankInstitutionAuthId].accounts.push(a);
    });
    renderConnections(connections, byAccount);
    await loadTransactions();
    return connections;
  }

  function renderConnections(connections, byAccount) {
    var box = $("connections");
    if (!connections.length) {
      box.replaceChildren(el("p", { class: "muted", text: "No bank linked yet." }));
      return;
    }
    box.replaceChildren.apply(box, connections.map(function (c) {
      var rows = c.accounts.map(function (a) {
        var b = byAccount[a.bankAccountId] || {};
        return el("tr", {}, [
          el("td", { text: a.accountName || "—" }),
          el("td", { text: a.lastFour ? "••" + a.lastFour : "—" }),
          el("td", { text: a.type + (a.subtype ? " / " + a.subtype : "") }),
          el("td", { class: "num", text: money(b.current, b.currencyCode) }),
          el("td", { class: "num", text: money(b.amount, b.currencyCode) }),
        ]);
      });
      var actions = [];
      if (NEEDS_RELINK.indexOf(c.status) !== -1) {
        actions.push(el("button", { type: "button", text: "Relink " + c.name, on: { click: function (e) { startLink(c.item, e.target); } } }));
      }
      if (EMULATOR && c.status === "ACTIVE") {
        actions.push(el("button", { type: "button", class: "secondary", text: "Simulate login required", title: "Asks the Plaid emulator to put this item into ITEM_LOGIN_REQUIRED", on: { click: function (e) { loginRequired(c, e.target); } } }));
      }
      actions.push(el("button", { type: "button", class: "danger", text: "Remove " + c.name, on: { click: function (e) { removeConnection(c, e.target); } } }));
      return el("article", { class: "connection", "aria-label": c.name, "data-connection": c.id }, [
        el("div", { class: "row" }, [
          el("h3", {}, [c.name, el("span", { class: "badge " + c.status, text: c.status }), el("span", { class: "badge " + c.history, text: "history " + c.history })]),
        ]),
        el("table", {}, [
          el("thead", {}, [el("tr", {}, [
            el("th", { scope: "col", text: "Account" }), el("th", { scope: "col", text: "Number" }), el("th", { scope: "col", text: "Type" }),
            el("th", { scope: "col", class: "num", text: "Current balance" }), el("th", { scope: "col", class: "num", text: "Available" }),
          ])]),
          el("tbody", {}, rows),
        ]),
        el("div", { class: "row" }, actions),
      ]);
    }));
  }

  function dayStart(value) { return value ? value + "T00:00:00Z" : undefined; }
  function dayEnd(value) { return value ? value + "T23:59:59Z" : undefined; }

  async function loadTransactions() {
    var input = { paginate: { limit: PAGE_SIZE, offset: offset } };
    if ($("from").value) input.startDate = dayStart($("from").value);
    if ($("to").value) input.endDate = dayEnd($("to").value);
    var page = (await graphql(Q.transactions, { input: input })).getPlaidBankTransactions;
    var tbody = $("transactions").querySelector("tbody");
    tbody.replaceChildren.apply(tbody, page.transactions.map(function (t) {
      return el("tr", {}, [
        el("td", { text: t.date }),
        el("td", { text: t.description || "" }),
        el("td", { text: t.merchantName || "" }),
        el("td", { text: accountNames[t.bankAccountId] || "removed account" }),
        el("td", { class: "num", text: money(t.amount, t.currencyCode) }),
        el("td", { text: t.pending ? "pending" : "posted" }),
      ]);
    }));
    if (!page.transactions.length) tbody.appendChild(el("tr", {}, [el("td", { colspan: "6", class: "muted", text: "No transactions." })]));
    var first = page.totalCount ? offset + 1 : 0;
    $("page-info").textContent = "Showing " + first + "–" + (offset + page.transactions.length) + " of " + page.totalCount;
    $("prev").disabled = offset === 0;
    $("next").disabled = offset + page.transactions.length >= page.totalCount;
  }

  $("filters").addEventListener("submit", function (e) {
    e.preventDefault();
    offset = 0;
    attempt(e.target.querySelector("button"), loadTransactions);
  });
  $("prev").addEventListener("click", function (e) {
    offset = Math.max(0, offset - PAGE_SIZE);
    attempt(e.target, loadTransactions);
  });
  $("next").addEventListener("click", function (e) {
    offset += PAGE_SIZE;
    attempt(e.target, loadTransactions);
  });

  // While a first sync runs, look again every 2 s (for a minute at most).
  function watchHistory() {
    clearTimeout(watching);
    var rounds = 0;
    var tick = async function () {
      rounds += 1;
      try {
        var connections = await load();
        if (rounds < 30 && connections && connections.some(function (c) { return c.history === "SYNCING"; })) watching = setTimeout(tick, 2000);
      } catch (e) {
        problem(e);
      }
    };
    watching = setTimeout(tick, 1000);
  }

  // --- Actions ---

  $("refresh").addEventListener("click", function (e) {
    attempt(e.target, async function () {
      var r = (await graphql(Q.refresh, {})).refreshPlaidBankConnections;
      var verify = r.verifyMembers.length ? " " + r.verifyMembers.length + " connection(s) need you to log in again: use Relink." : "";
      say("Refresh: " + r.status + "." + verify);
      await load();
    });
  });

  async function loginRequired(c, button) {
    await attempt(button, async function () {
      var r = await fetch("/demo/login-required", {
        method: "POST",
        headers: { Authorization: "Bearer " + auth.token, "Content-Type": "application/json" },
        body: JSON.stringify({ platformItemId: c.item }),
      });
      if (!r.ok) throw new Error("The emulator did not take it (HTTP " + r.status + ").");
      say("The emulator now says " + c.name + " needs a login; refreshing…");
      // Plaid's ITEM: ERROR webhook reaches bankgraph; a refresh also finds it.
      var out = (await graphql(Q.refresh, {})).refreshPlaidBankConnections;
      say("Refresh: " + out.status + ". " + c.name + " needs you to log in again: use Relink.");
      await load();
    });
  }

  async function removeConnection(c, button) {
    if (!window.confirm("Remove " + c.name + "? bankgraph keeps its history but stops syncing it.")) return;
    await attempt(button, async function () {
      await graphql(Q.remove, { input: { bankInstitutionAuthId: c.id } });
      say("Removed " + c.name + ".");
      await load();
    });
  }

  // --- Start ---

  showSignedIn();
  if (auth) {
    attempt(null, async function () {
      await load();
      var params = new URLSearchParams(window.location.search);
      var pending = JSON.parse(sessionStorage.getItem("bankgraph-demo-link") || "null");
      if (params.get("oauth_state_id") && pending) {
        // Back from an OAuth bank: re-initialise Link with the same token and this URL.
        var back = window.location.href;
        history.replaceState(null, "", window.location.pathname);
        say("Back from the bank; finishing Link…");
        await openLink(pending.token, pending.platformItemId, back);
      }
    });
  }
})();
