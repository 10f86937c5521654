// Link's screens, inside the iframe that link-initialize.js opens. Each step is checked by the
// emulator (/link/web/...); this page only shows it and tells the parent page what happened:
// onEvent, onSuccess and onExit travel by postMessage to the origin that opened Link.
(function () {
  "use strict";
  var root = document.getElementById("link");
  var parentOrigin = null;
  var token = null;
  var session = null; // the emulator's answer to /link/web/session
  var startError = null;
  var institution = null; // {institution_id, name, oauth}
  var lastError = null; // Plaid's error object, for onExit
  var lastRequestId = null;
  var exitStatus = "institution_not_found";
  var view = null;
  var opened = false;
  var mfaType = null;

  function send(message) {
    if (parentOrigin) window.parent.postMessage(message, parentOrigin);
  }

  function event(name, extra) {
    var metadata = {
      account_number_mask: null,
      error_type: null,
      error_code: null,
      error_message: null,
      exit_status: null,
      institution_id: institution ? institution.institution_id : null,
      institution_name: institution ? institution.name : null,
      institution_search_query: null,
      is_update_mode: null,
      match_reason: null,
      mfa_type: null,
      routing_number: null,
      selection: null,
      view_name: null,
      request_id: lastRequestId,
      link_session_id: session ? session.link_session_id : null,
      timestamp: new Date().toISOString(),
    };
    for (var k in extra || {}) metadata[k] = extra[k];
    send({ action: "event", eventName: name, metadata: metadata });
  }

  function transition(name, extra) {
    view = name;
    var meta = { view_name: name };
    for (var k in extra || {}) meta[k] = extra[k];
    event("TRANSITION_VIEW", meta);
  }

  async function api(path, body) {
    var r = await fetch("/link/web/" + path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    var data = await r.json().catch(function () {
      return { error_type: "API_ERROR", error_code: "INTERNAL_SERVER_ERROR", error_message: "bad response" };
    });
    lastRequestId = data.request_id || null;
    if (!r.ok || data.error_code) {
      var err = new Error(data.error_message || "Link request failed");
      err.plaid = {
        error_type: data.error_type,
        error_code: data.error_code,
        error_message: data.error_message,
        display_message: data.display_message || null,
      };
      throw err;
    }
    return data;
  }

  // --- Building screens (textContent only: nothing from the network becomes markup) ---

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] === null || attrs[k] === undefined) continue;
      if (k === "text") node.textContent = attrs[k];
      // Through the CSSOM: a style attribute would break the page's Content-Security-Policy.
      else if (k === "style") node.style.cssText = attrs[k];
      else if (k === "on") for (var ev in attrs.on) node.addEventListener(ev, attrs.on[ev]);
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) {
      if (c) node.appendChild(c);
    });
    return node;
  }

  function screen(title, children, focusFirst) {
    root.replaceChildren(
      el("header", {}, [
        el("span", { class: "brand", text: "PLAID" }, [el("span", { class: "badge", text: "emulator" })]),
        el("button", { type: "button", class: "close", "aria-label": "Close", on: { click: userExit } }, [
          document.createTextNode("×"),
        ]),
      ]),
      el("h1", { text: title, tabindex: "-1" }),
    );
    children.forEach(function (c) {
      if (c) root.appendChild(c);
    });
    var target = focusFirst ? root.querySelector(focusFirst) : root.querySelector("h1");
    (target || root.querySelector("h1")).focus();
  }

  function busy(button, on) {
    if (button) {
      button.disabled = on;
      button.setAttribute("aria-busy", on ? "true" : "false");
    }
  }

  function loading() {
    transition("LOADING");
    screen("Connecting…", [el("div", { class: "spinner", role: "progressbar", "aria-label": "Connecting" })]);
  }

  // --- The steps ---

  function consent() {
    exitStatus = "institution_not_found";
    var name = session.client_name;
    screen(name + " uses Plaid to connect your account", [
      el("p", { text: "Plaid lets you securely connect your financial accounts in seconds." }),
      el("p", {
        class: "muted",
        text: "This is bankgraph's offline Plaid emulator: no real bank is contacted. Log in with user_good / pass_good.",
      }),
      el("button", { type: "button", class: "primary", text: "Continue", on: { click: afterConsent } }),
    ], "button.primary");
  }

  function afterConsent() {
    if (session.update_mode) {
      institution = session.institution;
      pickInstitution(institution);
    } else {
      selectInstitution();
    }
  }

  function selectInstitution() {
    transition("SELECT_INSTITUTION");
    exitStatus = "institution_not_found";
    var list = el("ul", { class: "institutions", "aria-label": "Institutions" });
    var searchTimer = null;
    var flushSearch = function () {
      if (searchTimer === null) return;
      clearTimeout(searchTimer);
      searchTimer = null;
      var value = search.value.trim();
      if (value) event("SEARCH_INSTITUTION", { institution_search_query: value, view_name: "SELECT_INSTITUTION" });
    };
    function render(query) {
      var q = (query || "").trim().toLowerCase();
      list.replaceChildren();
      session.institutions
        .filter(function (i) {
          return !q || i.name.toLowerCase().indexOf(q) !== -1;
        })
        .forEach(function (i) {
          list.appendChild(
            el("li", {}, [
              el("button", { type: "button", on: { click: function () { flushSearch(); pickInstitution(i); } } }, [
                el("span", { class: "dot", style: "background:" + i.primary_color, "aria-hidden": "true" }),
                el("span", { text: i.name }),
              ]),
            ]),
          );
        });
      if (!list.children.length) list.appendChild(el("li", { class: "muted", text: "No institution matches." }));
    }
    var search = el("input", {
      type: "search",
      "aria-label": "Search institutions",
      placeholder: "Search institutions",
      autocomplete: "off",
      on: {
        input: function (e) {
          render(e.target.value);
          clearTimeout(searchTimer);
          searchTimer = setTimeout(flushSearch, 400);
        },
      },
    });
    render("");
    screen("Select your institution", [search, list], "input");
  }

  async function pickInstitution(inst) {
    institution = inst;
    if (!session.update_mode) event("SELECT_INSTITUTION", { view_name: "SELECT_INSTITUTION" });
    try {
      var next = await api("institution", { link_session_id: session.link_session_id, institution_id: inst.institution_id });
      if (next.next === "oauth") oauth(next);
      else credentials();
    } catch (e) {
      failed(e, "institution_not_found");
    }
  }

  function credentials() {
    transition("CREDENTIAL");
    exitStatus = "requires_credentials";
    var user = el("input", { type: "text", name: "username", autocomplete: "username", required: "" });
    var pass = el("input", { type: "password", name: "password", autocomplete: "current-password", required: "" });
    var submit = el("button", { type: "submit", class: "primary", text: "Submit" });
    var form = el("form", { novalidate: "" }, [
      el("label", {}, [document.createTextNode("Username"), user]),
      el("label", {}, [document.createTextNode("Password"), pass]),
      el("p", { class: "muted", text: "Sandbox: user_good / pass_good (mfa_device for a code, error_ITEM_LOCKED for an error)." }),
      submit,
    ]);
    form.style.cssText = "display:flex;flex-direction:column;gap:12px;flex:1";
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      busy(submit, true);
      event("SUBMIT_CREDENTIALS", { view_name: "CREDENTIAL" });
      loading();
      try {
        var next = await api("credentials", {
          link_session_id: session.link_session_id,
          username: user.value,
          password: pass.value,
        });
        step(next);
      } catch (err) {
        failed(err, "requires_credentials");
      }
    });
    screen((session.update_mode ? "Log in again at " : "Log in at ") + institution.name, [form], "input");
  }

  function mfa(challenge) {
    mfaType = challenge.mfa_type;
    transition("MFA", { mfa_type: mfaType });
    exitStatus = mfaType === "code" ? "requires_code" : mfaType === "questions" ? "requires_questions" : "requires_selections";
    var fields = challenge.prompts.map(function (p, i) {
      if (p.options) {
        var group = el("fieldset", {}, [el("legend", { text: p.label })]);
        p.options.forEach(function (o, j) {
          group.appendChild(
            el("label", {}, [el("input", { type: "radio", name: "q" + i, value: o, checked: j === 0 ? "" : null }), document.createTextNode(o)]),
          );
        });
        return { node: group, value: function () { var c = group.querySelector("input:checked"); return c ? c.value : ""; } };
      }
      var input = el("input", { type: "text", autocomplete: "one-time-code", inputmode: mfaType === "code" ? "numeric" : "text" });
      var label = el("label", {}, [document.createTextNode(p.label), input]);
      return { node: label, value: function () { return input.value; } };
    });
    var submit = el("button", { type: "submit", class: "primary", text: "Submit" });
    var form = el("form", { novalidate: "" }, fields.map(function (f) { return f.node; }).concat([
      challenge.prompts[0] && challenge.prompts[0].hint ? el("p", { class: "muted", text: challenge.prompts[0].hint + " (Sandbox: 1234)" }) : null,
      submit,
    ]).filter(Boolean));
    form.style.cssText = "display:flex;flex-direction:column;gap:12px;flex:1";
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      busy(submit, true);
      event("SUBMIT_MFA", { view_name: "MFA", mfa_type: mfaType });
      loading();
      try {
        var next = await api("mfa", {
          link_session_id: session.link_session_id,
          answers: fields.map(function (f) { return f.value(); }),
        });
        step(next);
      } catch (err) {
        failed(err, exitStatus);
      }
    });
    var round = challenge.rounds > 1 ? " (" + (challenge.round + 1) + " of " + challenge.rounds + ")" : "";
    screen("Verify your identity" + round, [form], "input");
  }

  function selectAccount(accounts) {
    transition("SELECT_ACCOUNT");
    exitStatus = "requires_account_selection";
    var boxes = accounts.map(function (a) {
      var box = el("input", { type: "checkbox", value: a.mask, checked: "" });
      return {
        mask: a.mask,
        box: box,
        node: el("label", { class: "check" }, [box, document.createTextNode(a.name + " ••" + a.mask + " (" + (a.subtype || a.type) + ")")]),
      };
    });
    var problem = el("p", { class: "error", role: "alert", hidden: "" });
    var submit = el("button", { type: "button", class: "primary", text: "Continue" });
    submit.addEventListener("click", async function () {
      var masks = boxes.filter(function (b) { return b.box.checked; }).map(function (b) { return b.mask; });
      if (!masks.length) {
        problem.textContent = "Select at least one account.";
        problem.hidden = false;
        return;
      }
      busy(submit, true);
      loading();
      try {
        step(await api("accounts", { link_session_id: session.link_session_id, masks: masks }));
      } catch (err) {
        failed(err, "requires_account_selection");
      }
    });
    screen("Select the accounts to share", [
      el("fieldset", {}, [el("legend", { text: "Accounts at " + institution.name })].concat(boxes.map(function (b) { return b.node; }))),
      problem,
      submit,
    ], "input");
  }

  function oauth(start) {
    transition("OAUTH");
    exitStatus = "requires_oauth";
    var url = window.location.origin + "/link/oauth/bank?oauth_state_id=" + encodeURIComponent(start.oauth_state_id);
    var go = el("button", { type: "button", class: "primary", text: "Continue" });
    go.addEventListener("click", function () {
      event("OPEN_OAUTH", { view_name: "OAUTH" });
      if (start.mode === "redirect") {
        // The bank sends the user back to the app's redirect_uri, which re-initialises Link.
        send({ action: "redirect", url: url });
        return;
      }
      window.open(url, "plaid-oauth", "popup,width=480,height=640");
      waitForBank();
    });
    screen("Log in at " + institution.name, [
      el("p", { text: "You will be sent to " + institution.name + " to log in and choose what to share, then back here." }),
      go,
    ], "button.primary");
  }

  function waitForBank() {
    screen("Waiting for " + institution.name + "…", [
      el("div", { class: "spinner", role: "progressbar", "aria-label": "Waiting for the bank" }),
      el("p", { class: "muted", text: "Finish logging in in the window that opened." }),
    ]);
    var poll = async function () {
      try {
        var next = await api("oauth_status", { link_session_id: session.link_session_id });
        if (next.next === "oauth_pending") setTimeout(poll, 500);
        else step(next);
      } catch (err) {
        failed(err, "requires_oauth");
      }
    };
    setTimeout(poll, 500);
  }

  function connected(done) {
    transition("CONNECTED");
    var go = el("button", { type: "button", class: "primary", text: "Continue" });
    go.addEventListener("click", function () {
      event("HANDOFF", { view_name: "CONNECTED" });
      send({ action: "success", publicToken: done.public_token, metadata: done.metadata });
      finished = true;
    });
    screen("Success", [
      el("p", { text: "Your account at " + institution.name + " has been connected to " + session.client_name + "." }),
      go,
    ], "button.primary");
  }

  function step(next) {
    if (next.next === "mfa") mfa(next.mfa);
    else if (next.next === "select_account") selectAccount(next.accounts);
    else if (next.next === "connected") connected(next);
  }

  var finished = false;

  function failed(err, status) {
    var plaid = err.plaid || {
      error_type: "API_ERROR",
      error_code: "INTERNAL_SERVER_ERROR",
      error_message: String(err && err.message),
      display_message: null,
    };
    lastError = plaid;
    exitStatus = status;
    event("ERROR", { error_type: plaid.error_type, error_code: plaid.error_code, error_message: plaid.error_message, view_name: view });
    transition("ERROR", { error_type: plaid.error_type, error_code: plaid.error_code, error_message: plaid.error_message });
    var retry =
      plaid.error_code === "INVALID_CREDENTIALS" || plaid.error_code === "INVALID_MFA"
        ? el("button", { type: "button", class: "secondary", text: "Try again", on: { click: credentials } })
        : null;
    screen(plaid.error_code === "INVALID_LINK_TOKEN" ? "This link has expired" : "Something went wrong", [
      el("p", { class: "error", role: "alert", text: plaid.display_message || plaid.error_message }),
      el("p", { class: "muted", text: "Error code: " + plaid.error_code }),
      el("div", { class: "actions" }, [
        retry,
        el("button", { type: "button", class: "primary", text: "Exit", on: { click: userExit } }),
      ]),
    ], retry ? "button.secondary" : "button.primary");
  }

  function userExit() {
    if (finished) return;
    finished = true;
    transition("EXIT");
    event("EXIT", { exit_status: exitStatus, view_name: "EXIT" });
    send({
      action: "exit",
      error: lastError,
      metadata: {
        institution: institution ? { name: institution.name, institution_id: institution.institution_id } : null,
        status: exitStatus,
        link_session_id: session ? session.link_session_id : null,
        request_id: lastRequestId,
      },
    });
  }

  function open() {
    if (opened) return;
    opened = true;
    if (startError) {
      event("OPEN", { view_name: null, is_update_mode: null });
      failed(startError, "institution_not_found");
      return;
    }
    if (session.resumed) {
      // Back from the bank's OAuth page: the login there finished.
      institution = session.institution;
      event("OPEN", { view_name: null, is_update_mode: session.update_mode ? "yes" : "no" });
      step(session.resumed);
      return;
    }
    event("OPEN", { view_name: "CONSENT", is_update_mode: session.update_mode ? "yes" : "no" });
    view = "CONSENT";
    consent();
  }

  // Focus stays inside Link: Tab from the last control goes to the first, and back.
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      e.preventDefault();
      userExit();
      return;
    }
    if (e.key !== "Tab") return;
    var items = Array.prototype.filter.call(
      root.querySelectorAll("button, input, [tabindex='0']"),
      function (n) { return !n.disabled && n.offsetParent !== null; },
    );
    if (!items.length) return;
    var first = items[0];
    var last = items[items.length - 1];
    if (e.shiftKey && (document.activeElement === first || !root.contains(document.activeElement))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && document.activeElement === last) {
      e.preventDefault();
      first.focus();
    }
  });

  window.addEventListener("message", async function (e) {
    if (e.source !== window.parent) return;
    var m = e.data || {};
    if (m.action === "init" && !token) {
      parentOrigin = e.origin;
      token = String(m.token || "");
      try {
        session = await api("session", { link_token: token, received_redirect_uri: m.receivedRedirectUri || null });
      } catch (err) {
        startError = err;
      }
      send({ action: "loaded" });
    } else if (e.origin === parentOrigin && m.action === "open") {
      open();
    } else if (e.origin === parentOrigin && m.action === "exit") {
      userExit();
    }
  });

  // The parent answers with the token (it only accepts messages from this frame's origin).
  window.parent.postMessage({ action: "ready" }, "*");
})();
