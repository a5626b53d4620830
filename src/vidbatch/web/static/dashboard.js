/* Live progress of the batch page: ask the server for a few numbers about once a second
   until the batch has settled. Without JavaScript the page still shows everything. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function start() {
    var box = document.querySelector("[data-progress-url]");
    if (!box || box.getAttribute("data-settled") === "true") { return; }
    var url = box.getAttribute("data-progress-url");
    var every = 1000;
    var failures = 0;

    function set(name, value) {
      var nodes = box.querySelectorAll('[data-field="' + name + '"]');
      for (var i = 0; i < nodes.length; i++) {
        if (nodes[i].textContent !== String(value)) { nodes[i].textContent = String(value); }
      }
    }

    function note(text, href, linkText) {
      var el = box.querySelector('[data-field="note"]');
      if (!el) { return; }
      el.textContent = text + (href ? " " : "");
      if (href) {
        var a = document.createElement("a");
        a.href = href;
        a.textContent = linkText;
        el.appendChild(a);
      }
    }

    function apply(data) {
      var p = data.progress;
      ["succeeded", "failed", "cancelled", "running", "pending"].forEach(function (part) {
        set(part, p[part]);
        var seg = box.querySelector('[data-seg="' + part + '"]');
        if (seg) { seg.style.width = p.widths[part] + "%"; }
      });
      var bar = box.querySelector("[data-bar]");
      if (bar) { bar.setAttribute("aria-label", p.label); }
      set("label", p.label);
      var status = box.querySelector('[data-field="status"]');
      if (status && status.textContent !== data.status) {
        status.textContent = data.status;
        status.className = "badge badge-" + data.status;
      }
      ["reserved", "charged", "refunded", "held"].forEach(function (k) { set(k, data.credits[k]); });
      set("webhook_status", data.webhook_status);
      box.setAttribute("data-ended", p.ended);
    }

    function tick() {
      fetch(url, { credentials: "same-origin", cache: "no-store",
                   headers: { "Accept": "application/json" } })
        .then(function (response) {
          if (response.status === 401) {
            note("Your session has ended.", "/admin/login?next=" +
                 encodeURIComponent(location.pathname), "Sign in again");
            return null;
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          if (data === null) { return; }
          failures = 0;
          apply(data);
          if (data.settled) {
            box.setAttribute("data-settled", "true");
            note("The batch has settled (" + data.status + ").", location.pathname + "#tasks",
                 "Reload to see every task's final state");
            return;
          }
          note("");
          setTimeout(tick, document.hidden ? 5 * every : every);
        })
        .catch(function () {
          failures += 1;
          note("Cannot reach the server; trying again.");
          setTimeout(tick, Math.min(30000, every * Math.pow(2, failures)));
        });
    }

    setTimeout(tick, every);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
