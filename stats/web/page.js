// Admin enhancement of the stats page: the token is typed once and kept in
// sessionStorage (this tab only); the forms then send it as a bearer header
// instead of a form field. Without JavaScript the forms post the token field.
(function () {
  "use strict";
  var KEY = "sluice-admin-token";
  document.body.classList.add("js");
  var tok = document.getElementById("tok");
  var state = document.getElementById("tokstate");
  var msg = document.getElementById("msg");
  function token() { try { return sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; } }
  function show() { state.textContent = token() ? "token kept for this tab" : "no token yet"; }
  function say(text, err) { msg.textContent = text; msg.className = "jsonly" + (err ? " err" : ""); }
  document.getElementById("tokform").addEventListener("submit", function (ev) {
    ev.preventDefault();
    try { sessionStorage.setItem(KEY, tok.value.trim()); } catch (e) {}
    tok.value = "";
    show();
  });
  show();
  var forms = document.querySelectorAll("form.act");
  for (var i = 0; i < forms.length; i++) {
    forms[i].addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = token();
      if (!t) { say("type the admin token first", true); tok.focus(); return; }
      var form = ev.target;
      var body = new URLSearchParams(new FormData(form, ev.submitter));
      body.delete("token");
      body.delete("from");
      fetch(form.action, { method: "POST", headers: { "Authorization": "Bearer " + t }, body: body })
        .then(function (r) { return r.text().then(function (txt) { return { ok: r.ok, status: r.status, txt: txt }; }); })
        .then(function (r) {
          if (r.status === 401) { try { sessionStorage.removeItem(KEY); } catch (e) {} show(); }
          say(r.txt.trim() || ("HTTP " + r.status), !r.ok);
          if (r.ok) { setTimeout(function () { location.reload(); }, 600); }
        })
        .catch(function (e) { say(String(e), true); });
    });
  }
})();
