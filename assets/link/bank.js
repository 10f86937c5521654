// The emulated bank's OAuth page: the user's answer goes to the emulator, which says where the
// browser goes next (the app's redirect_uri), or nowhere when Link opened this page in a popup.
(function () {
  "use strict";
  var main = document.getElementById("bank");
  var state = main.getAttribute("data-state");
  var problem = main.querySelector(".error");
  async function answer(allow) {
    main.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    var r = await fetch("/link/oauth/authorize", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ oauth_state_id: state, allow: allow }),
    });
    var body = await r.json();
    if (!r.ok) {
      problem.textContent = body.error_message || "This login could not be finished.";
      problem.hidden = false;
      return;
    }
    if (body.redirect) {
      window.location.assign(body.redirect);
    } else {
      main.replaceChildren();
      var done = document.createElement("h1");
      done.textContent = "You can close this window.";
      main.appendChild(done);
      window.close();
    }
  }
  document.getElementById("allow").addEventListener("click", function () { answer(true); });
  document.getElementById("deny").addEventListener("click", function () { answer(false); });
  document.getElementById("allow").focus();
})();
