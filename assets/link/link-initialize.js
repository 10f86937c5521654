// Plaid Link for the web, served by bankgraph's Plaid emulator at Plaid's path. It defines
// window.Plaid.create(config) -> { open, exit, destroy } as Plaid documents it; Link's
// screens run in an iframe of the emulator's origin and talk to this page by postMessage only.
(function () {
  "use strict";
  if (window.Plaid && window.Plaid.__emulator) return;
  var script = document.currentScript;
  var ORIGIN = new URL(script ? script.src : "/", window.location.href).origin;
  var FRAME_URL = ORIGIN + "/link/v2/stable/link.html";

  function call(fn, args) {
    if (typeof fn !== "function") return;
    try {
      fn.apply(null, args);
    } catch (e) {
      setTimeout(function () {
        throw e;
      });
    }
  }

  function create(config) {
    if (!config || typeof config.token !== "string" || config.token === "") {
      throw new Error("Plaid.create: config.token (a link_token) is required");
    }
    if (typeof config.onSuccess !== "function") {
      throw new Error("Plaid.create: config.onSuccess is required");
    }
    var overlay = document.createElement("div");
    overlay.setAttribute("data-plaid-link", "");
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-modal", "true");
    overlay.setAttribute("aria-label", "Plaid Link");
    overlay.style.cssText =
      "position:fixed;inset:0;z-index:2147483647;display:none;align-items:center;justify-content:center;" +
      "background:rgba(17,17,17,0.55)";
    var frame = document.createElement("iframe");
    frame.src = FRAME_URL;
    frame.title = "Plaid Link";
    frame.style.cssText =
      "width:min(420px,100vw);height:min(640px,100vh);border:0;border-radius:12px;background:#fff;" +
      "box-shadow:0 12px 40px rgba(0,0,0,0.35)";
    overlay.appendChild(frame);

    var ready = false;
    var wantOpen = false;
    var isOpen = false;
    var destroyed = false;
    var returnFocus = null;
    var inerted = [];

    function post(message) {
      if (frame.contentWindow) frame.contentWindow.postMessage(message, ORIGIN);
    }

    function show() {
      if (isOpen || destroyed) return;
      isOpen = true;
      returnFocus = document.activeElement;
      // Everything else on the page is out of reach while Link is open: focus stays in Link.
      Array.prototype.forEach.call(document.body.children, function (el) {
        if (el !== overlay && !el.hasAttribute("inert")) {
          el.setAttribute("inert", "");
          inerted.push(el);
        }
      });
      overlay.style.display = "flex";
      frame.focus();
      post({ action: "open" });
    }

    function hide() {
      if (!isOpen) return;
      isOpen = false;
      overlay.style.display = "none";
      inerted.forEach(function (el) {
        el.removeAttribute("inert");
      });
      inerted = [];
      if (returnFocus && typeof returnFocus.focus === "function") returnFocus.focus();
    }

    function onMessage(e) {
      if (e.origin !== ORIGIN || e.source !== frame.contentWindow) return;
      var m = e.data || {};
      switch (m.action) {
        case "ready":
          post({
            action: "init",
            token: config.token,
            receivedRedirectUri: config.receivedRedirectUri || null,
            origin: window.location.origin,
          });
          break;
        case "loaded":
          ready = true;
          call(config.onLoad, []);
          if (wantOpen) show();
          break;
        case "event":
          call(config.onEvent, [m.eventName, m.metadata]);
          break;
        case "success":
          hide();
          call(config.onSuccess, [m.publicToken, m.metadata]);
          break;
        case "exit":
          hide();
          call(config.onExit, [m.error || null, m.metadata]);
          break;
        case "redirect":
          // Only to this origin's bank pages (an OAuth login in this window).
          if (typeof m.url === "string" && m.url.indexOf(ORIGIN + "/link/oauth/") === 0) {
            window.location.assign(m.url);
          }
          break;
      }
    }

    window.addEventListener("message", onMessage);
    var attach = function () {
      if (!destroyed) document.body.appendChild(overlay);
    };
    if (document.body) attach();
    else document.addEventListener("DOMContentLoaded", attach);

    return {
      open: function () {
        if (destroyed) return;
        wantOpen = true;
        if (ready) show();
      },
      exit: function (options, callback) {
        if (destroyed) return;
        if (!isOpen) {
          wantOpen = false;
          call(callback, []);
          return;
        }
        post({ action: "exit", force: !!(options && options.force) });
        call(callback, []);
      },
      destroy: function () {
        destroyed = true;
        hide();
        window.removeEventListener("message", onMessage);
        if (overlay.parentNode) overlay.parentNode.removeChild(overlay);
      },
    };
  }

  window.Plaid = { create: create, version: "emulator", __emulator: true };
})();
