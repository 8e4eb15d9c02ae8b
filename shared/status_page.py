"""/status for browsers: one self-contained HTML page that polls the JSON /status every second.

A browser cannot add an `api-key` header to a navigation, so the page itself carries no data and
needs no key: its script takes the key from the URL fragment (`/status#key=...`, which browsers never
send, so it stays out of every log) or from a form, keeps it in sessionStorage for the tab, and
fetches `/status` with `Accept: application/json` and the `api-key` header, authenticated as ever.
Data is written as text only (textContent, never markup), so a client's name cannot inject HTML, and
the Content-Security-Policy admits only this page's own inline style and script (by hash) and
connections to its own origin.
"""

from __future__ import annotations

import base64
import hashlib

_STYLE = """
:root { --used: #2563eb; --reserved: #f59e0b; --free: #e5e7eb; }
[hidden] { display: none !important; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.25rem 1.5rem;
  color: #111827; background: #f9fafb; }
h1 { font-size: 1.35rem; margin: 0 0 .2rem; }
h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
.meta { color: #4b5563; margin: 0 0 1rem; }
.error, .panic { padding: .5rem .75rem; border-radius: 4px; margin: 0 0 1rem; }
.error { background: #fee2e2; color: #991b1b; }
.panic { background: #7f1d1d; color: #fff; }
form { margin: 0 0 1rem; }
form input { width: 22rem; max-width: 100%; }
.hint { color: #6b7280; font-size: 12px; margin: .3rem 0 0; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 6px; padding: .75rem 1rem; margin: 0 0 1rem; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
table.hosts th:nth-child(1) { width: 15%; }
table.hosts th:nth-child(2) { width: 42%; }
table.hosts th:nth-child(3), table.hosts th:nth-child(4) { width: 11%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #f3f4f6; vertical-align: top; }
th { font-weight: 600; color: #374151; font-size: 12px; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.host { font-weight: 600; }
.sub { color: #6b7280; font-size: 12px; }
.bar { display: flex; height: 16px; background: var(--free); border-radius: 3px; overflow: hidden; }
.bar span { display: block; height: 100%; }
.bar .used { background: var(--used); }
.bar .reserved { background: var(--reserved); }
.bar .free { background: var(--free); }
.key { display: inline-block; width: .7em; height: .7em; border-radius: 2px; margin-right: .25em; }
.key.used { background: var(--used); }
.key.reserved { background: var(--reserved); }
.key.free { background: var(--free); border: 1px solid #d1d5db; }
.badge { display: inline-block; padding: 0 .4rem; border-radius: 3px; margin: 0 .25rem .25rem 0; font-size: 12px; }
.badge.ok { background: #dcfce7; color: #166534; }
.badge.warn { background: #fef3c7; color: #92400e; }
.badge.bad { background: #fee2e2; color: #991b1b; }
"""

_SCRIPT = """
"use strict";
(() => {
  const STORE = "gateway-status-key";
  const $ = (id) => document.getElementById(id);
  let timer = 0;

  // Every piece of data becomes a text node: nothing the gateway reports is ever parsed as markup.
  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  // The JSON may gain fields or lack some: read everything defensively.
  const num = (value) => (typeof value === "number" && Number.isFinite(value) ? value : 0);
  const obj = (value) => (value && typeof value === "object" && !Array.isArray(value) ? value : {});
  const list = (value) => (Array.isArray(value) ? value : []);
  const fmt = (value) => Math.round(num(value)).toLocaleString("en-US");
  const secs = (value) => num(value).toFixed(1) + " s";
  const text = (value) => (value === null || value === undefined ? "" : String(value));

  function cell(className, ...children) {
    return el("td", className, ...children);
  }

  // used = window - reserved, reserved = in flight, free = quota - window; all against the host's TPM.
  function bar(host) {
    const tpm = num(host.tpm);
    const windowTokens = num(host.window_tokens);
    const reserved = Math.max(0, num(host.reserved_tokens));
    const used = Math.max(0, windowTokens - reserved);
    const free = Math.max(0, tpm - windowTokens);
    const pct = (tokens) => (tpm > 0 ? Math.min(100, (100 * tokens) / tpm) : 0);
    const usedPct = pct(used);
    const reservedPct = Math.min(100 - usedPct, pct(reserved));
    const freePct = Math.min(100 - usedPct - reservedPct, pct(free));
    const node = el("div", "bar");
    node.setAttribute("role", "img");
    const summary = `used ${fmt(used)}, reserved ${fmt(reserved)}, free ${fmt(free)} of ${fmt(tpm)} TPM`;
    node.setAttribute("aria-label", summary);
    for (const [name, tokens, width] of [["used", used, usedPct], ["reserved", reserved, reservedPct],
                                         ["free", free, freePct]]) {
      const part = el("span", name);
      part.style.width = width.toFixed(2) + "%";  // CSSOM, which the policy allows; never a style attribute
      part.dataset.tokens = String(Math.round(tokens));
      part.title = `${name}: ${fmt(tokens)} tokens`;
      node.append(part);
    }
    const legend = el("div", "sub",
      el("span", "key used"), `used ${fmt(used)}  `, el("span", "key reserved"), `reserved ${fmt(reserved)}  `,
      el("span", "key free"), `free ${fmt(free)} of ${fmt(tpm)} TPM`);
    return [node, legend];
  }

  function states(host) {
    const node = el("div", "states");
    const badge = (kind, words, reason) => {
      node.append(el("span", "badge " + kind, reason ? `${words}: ${reason}` : words));
    };
    if (num(host.ejected_seconds) > 0) {
      badge("bad", `ejected ${secs(host.ejected_seconds)}`, text(host.ejection_reason));
    }
    if (num(host.cooldown_seconds) > 0) {
      badge("warn", `cooling down ${secs(host.cooldown_seconds)}`, text(host.cooldown_reason));
    }
    for (const block of list(host.token_blocks)) {
      const b = obj(block);
      badge("warn", `requests of ${fmt(b.min_cost)}+ tokens wait ${secs(b.seconds)}`);
    }
    const probe = obj(host.probe);
    if (probe.healthy === false) badge(host.probe_disagrees ? "warn" : "bad", "probe failing", text(probe.reason));
    if (host.probe_disagrees) badge("warn", "live traffic succeeds: probe overruled");
    if (host.available === false && !node.childNodes.length) badge("bad", "unavailable");
    if (!node.childNodes.length) badge("ok", "available");
    return node;
  }

  function hostRow(host) {
    const row = el("tr");
    row.dataset.host = text(host.name);
    row.append(
      cell("", el("div", "host", text(host.name)),
        el("div", "sub", `${text(host.deployment)} · priority ${text(host.priority)}`)),
      cell("", ...bar(host)),
      cell("num", fmt(host.free_tokens), el("div", "sub", `${fmt(host.free_requests)} of ${fmt(host.rpm)} RPM`)),
      cell("num", fmt(host.served_tokens), el("div", "sub", `${fmt(host.served_requests)} requests`)),
      cell("", states(host)),
    );
    return row;
  }

  function table(className, headings, rows) {
    const head = el("tr");
    for (const [label, cellClass] of headings) head.append(el("th", cellClass, label));
    return el("table", className, el("thead", "", head), el("tbody", "", ...rows));
  }

  function deployment(name, hosts, panicSeconds) {
    const section = el("section", "deployment", el("h2", "", name));
    section.dataset.deployment = name;
    if (panicSeconds !== undefined) {
      section.append(el("p", "panic",
        `Panic mode for ${secs(panicSeconds)}: probes fail on hosts with most of the quota, routing to them anyway.`));
    }
    section.append(table("hosts",
      [["host", ""], ["window (tokens in the last minute, against quota)", ""], ["headroom", "num"],
       ["served", "num"], ["state", ""]],
      list(hosts).map((host) => hostRow(obj(host)))));
    return section;
  }

  function clients(all) {
    const rows = Object.entries(obj(all)).map(([name, value]) => {
      const client = obj(value);
      const mine = obj(client.this_instance_today);
      const limits = Object.entries(obj(client.limits)).map(([k, v]) => `${k} ${text(v)}`).join(", ");
      const row = el("tr", "",
        cell("host", name), cell("num", text(client.priority)), cell("num", fmt(client.tokens_today)),
        cell("num", fmt(mine.prompt_tokens)), cell("num", fmt(mine.completion_tokens)), cell("num", fmt(mine.requests)),
        cell("sub", limits || "none"));
      row.dataset.client = name;
      return row;
    });
    return el("section", "", el("h2", "", "Clients today"), table("clients",
      [["client", ""], ["priority", "num"], ["tokens (all instances)", "num"], ["prompt (this instance)", "num"],
       ["completion", "num"], ["requests", "num"], ["limits", ""]], rows));
  }

  function render(report) {
    const { kind, ...counters } = obj(report.ledger);
    const ledger = [text(kind), ...Object.entries(counters).filter(([, v]) => typeof v !== "object")
      .map(([k, v]) => `${k} ${text(v)}`)].filter(Boolean).join(", ");
    const scale = num(report.time_scale);
    $("meta").textContent = [
      `instance ${text(report.instance)}`, `${fmt(report.in_flight)} in flight`, `ledger: ${ledger}`,
      scale && scale !== 1 ? `seconds are simulated (${scale}x time)` : "",
      `updated ${new Date().toLocaleTimeString()}`,
    ].filter(Boolean).join(" · ");
    const panic = obj(report.panic);
    const sections = Object.entries(obj(report.deployments))
      .map(([name, hosts]) => deployment(name, hosts, panic[name]));
    sections.push(clients(report.clients));
    $("report").replaceChildren(...sections);
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  async function poll() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(STORE);
    $("login").hidden = Boolean(key);
    if (!key) return;
    try {
      const response = await fetch(location.pathname, {
        headers: { accept: "application/json", "api-key": key }, cache: "no-store", credentials: "omit",
      });
      const body = await response.json().catch(() => null);
      if (response.ok && body) {
        render(obj(body));
        showError("");
      } else {
        const message = text(obj(obj(body).error).message) || response.statusText;
        showError(`${response.status}: ${message}`);
        if (response.status === 401 || response.status === 403) {
          // Asking again every second with a key that is refused would only fill the access log.
          sessionStorage.removeItem(STORE);
          $("login").hidden = false;
          $("report").replaceChildren();
          return;
        }
      }
    } catch (error) {
      showError(`The gateway did not answer: ${error.message}`);
    }
    timer = setTimeout(poll, 1000);
  }

  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("key")) {
    sessionStorage.setItem(STORE, fragment.get("key"));
    history.replaceState(null, "", location.pathname);  // out of the address bar, the history and screenshots
  }
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(STORE, $("key").value.trim());
    $("key").value = "";
    showError("");
    poll();
  });
  poll();
})();
"""

_BODY = """
<h1>Gateway status</h1>
<p id="meta" class="meta">Waiting for the gateway...</p>
<p id="error" class="error" role="alert" hidden></p>
<form id="login" hidden>
  <label for="key">Gateway key</label>
  <input id="key" type="password" autocomplete="off" spellcheck="false" required>
  <button type="submit">Show status</button>
  <p class="hint">The key stays in this tab (sessionStorage) and goes only into the api-key header of the
  page's own requests to /status. A link of the form /status#key=... fills it in.</p>
</form>
<div id="report"></div>
"""

PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<title>Gateway status</title><link rel="icon" href="data:,">'
    f"<style>{_STYLE}</style></head><body>{_BODY}<script>{_SCRIPT}</script></body></html>\n"
).encode()


def _source_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_source_hash(_SCRIPT)}",
        f"style-src {_source_hash(_STYLE)}",
        "connect-src 'self'",
        "img-src data:",  # the empty favicon, so the browser asks for no /favicon.ico
        "base-uri 'none'",
        "form-action 'none'",  # the key form is handled by the script; it must never submit the key anywhere
        "frame-ancestors 'none'",
    )
)

PAGE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "vary": "accept",
}


def wants_page(accept: str) -> bool:
    """Serve the page only to a client that accepts text/html and names no JSON (browsers' navigations).

    Everything else, curl's `*/*`, no Accept at all, or any acceptable `application/json` whatever its
    q-value, keeps getting the JSON, so no existing client changes.
    """
    html = json = False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if not quality > 0:  # q=0 refuses; so does a garbled q (NaN included)
            continue
        media = media.lower()
        html = html or media == "text/html"
        json = json or media == "application/json"
    return html and not json
