/* callrec console: the dashboard (the landing page of supervisors, QA and security).
 *
 * Figures from GET /api/v1/dashboard (SQL aggregates under the visibility rule), for the viewer's days; every
 * figure is a link to the calls list filtered to exactly the calls it counts.
 */
"use strict";
(function () {
  const C = window.CALLREC_CONSOLE;
  const { $, t, el, clear, api } = C;
  const CONSENTS = ["implied", "granted", "declined", "not_given", "abandoned", "notice_failed", "unavailable"];
  const PROBLEMS = ["failed", "missing", "empty", "unclosed"];
  const dash = { range: "30d", data: null, seq: 0 };

  function zone() { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; }

  function rangeOf(name) {  // [from, to) in local days, as the calls list's presets
    const now = new Date();
    const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const day = (n) => new Date(midnight.getFullYear(), midnight.getMonth(), midnight.getDate() + n);
    if (name === "today") return [midnight, day(1)];
    if (name === "7d") return [day(-6), day(1)];
    if (name === "month") return [new Date(now.getFullYear(), now.getMonth(), 1), day(1)];
    return [day(-29), day(1)];
  }

  // A link to the calls list that shows exactly the calls of a figure.
  function listLink(count, filters, label) {
    const q = new URLSearchParams();
    q.set("from", dash.data.from_local.toISOString());
    q.set("to", dash.data.to_local.toISOString());
    for (const [k, v] of Object.entries(filters)) q.set(k, v);
    return el("a", { href: "#/search?" + q.toString(), class: "figure", "aria-label": label + ": " + C.fmtNumber(count, 0) },
      C.fmtNumber(count, 0));
  }
  function dayLink(day, count, filters, label) {
    const [y, m, d] = day.split("-").map(Number);
    const from = new Date(y, m - 1, d), to = new Date(y, m - 1, d + 1);
    const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), ...filters });
    return el("a", { href: "#/search?" + q.toString(), class: "figure",
                     "aria-label": C.fmtTime(from.toISOString()).split(",")[0] + ", " + label + ": " + C.fmtNumber(count, 0) },
      C.fmtNumber(count, 0));
  }

  async function load() {
    const mine = ++dash.seq;
    const [from, to] = rangeOf(dash.range);
    const q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), tz: zone() });
    C.showError("");
    C.status(t("dash.loading"));
    $("view-dashboard").setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "/api/v1/dashboard?" + q.toString());
      if (mine !== dash.seq) return;
      data.from_local = from;
      data.to_local = to;
      dash.data = data;
      render();
      C.status("");
    } catch (e) {
      if (mine === dash.seq) { C.status(""); C.reportError(e); }
    } finally {
      if (mine === dash.seq) $("view-dashboard").removeAttribute("aria-busy");
    }
  }

  function pairs(dl, items) {
    clear(dl);
    for (const [label, value, id] of items) dl.append(el("dt", {}, label), el("dd", id ? { id } : {}, value));
  }

  function render() {
    const d = dash.data;
    if (!d) return;
    for (const b of document.querySelectorAll("#view-dashboard .preset")) {
      b.setAttribute("aria-pressed", b.dataset.range === dash.range ? "true" : "false");
    }
    $("dash-range").textContent = t("dash.range", { from: C.fmtTime(d.from_local.toISOString()),
                                                    to: C.fmtTime(d.to_local.toISOString()), tz: d.tz });
    const declined = d.consent.declined || 0;
    pairs($("dash-totals"), [
      [t("dash.total"), listLink(d.total, {}, t("dash.total")), "dash-total"],
      [t("dash.recorded"), el("span", {}, listLink(d.recorded, { recorded: "true" }, t("dash.recorded")), " (",
                              d.share_recorded === null ? t("unknown") : C.fmtPercent(d.share_recorded), ")"), "dash-recorded"],
      [t("consent.declined"), listLink(declined, { consent: "declined" }, t("consent.declined")), "dash-declined"],
    ]);
    pairs($("dash-problems"), PROBLEMS.map((p) => [t("rec." + p), listLink(d.problems[p] || 0, { recording: p }, t("rec." + p)),
                                                   "dash-problem-" + p]));
    const alertRows = [[t("dash.alerts_total"), el("a", { href: "#/alerts?rule=", class: "figure" }, C.fmtNumber(d.alerts.total, 0)),
                        "dash-alerts-total"]];
    for (const r of d.alerts.rules) {
      alertRows.push([r.rule, el("a", { href: "#/alerts?rule=" + encodeURIComponent(r.rule), class: "figure",
                                        "aria-label": t("dash.alerts_rule", { rule: r.rule, n: r.alerts }) },
                                 C.fmtNumber(r.alerts, 0))]);
    }
    pairs($("dash-alerts"), alertRows);
    renderDays(d);
    renderAgents(d);
  }

  function renderDays(d) {
    const table = $("dash-days"), head = table.tHead, body = table.tBodies[0];
    clear(head);
    clear(body);
    const shown = CONSENTS.filter((c) => d.consent[c]);
    const hasNone = !!d.consent.none;
    const tr = el("tr", {}, el("th", { scope: "col" }, t("dash.day")), el("th", { scope: "col", class: "num" }, t("dash.calls")));
    for (const c of shown) tr.append(el("th", { scope: "col", class: "num" }, t("consent." + c)));
    if (hasNone) tr.append(el("th", { scope: "col", class: "num" }, t("consent.none")));
    tr.append(el("th", { scope: "col", class: "num" }, t("dash.recorded")));
    head.append(tr);
    for (const day of d.days.slice().reverse()) {
      const [y, m, dd] = day.day.split("-").map(Number);
      const label = new Date(y, m - 1, dd).toLocaleDateString(document.documentElement.lang,
                                                              { weekday: "short", day: "numeric", month: "short" });
      const row = el("tr", { dataset: { day: day.day } }, el("th", { scope: "row" }, label),
        el("td", { class: "num" }, dayLink(day.day, day.total, {}, t("dash.calls"))));
      for (const c of shown) {
        const n = day.consent[c] || 0;
        row.append(el("td", { class: "num", dataset: { consent: c } }, n ? dayLink(day.day, n, { consent: c }, t("consent." + c)) : "0"));
      }
      if (hasNone) row.append(el("td", { class: "num" }, C.fmtNumber(day.consent.none || 0, 0)));
      row.append(el("td", { class: "num" }, dayLink(day.day, day.recorded, { recorded: "true" }, t("dash.recorded"))));
      body.append(row);
    }
    if (!d.days.length) body.append(el("tr", {}, el("td", { colspan: String(3 + shown.length + (hasNone ? 1 : 0)) }, t("dash.none"))));
  }

  function renderAgents(d) {
    const body = $("dash-agents").tBodies[0];
    clear(body);
    for (const a of d.agents) {
      const who = a.name ? a.agent + " · " + a.name : a.agent;
      body.append(el("tr", { dataset: { agent: a.agent } },
        el("th", { scope: "row" }, who),
        el("td", { class: "num" }, listLink(a.calls, { agent: a.agent }, who + ", " + t("dash.calls"))),
        el("td", { class: "num" }, listLink(a.declined, { agent: a.agent, consent: "declined" }, who + ", " + t("dash.declined"))),
        el("td", { class: "num" }, C.fmtPercent(a.decline_rate))));
    }
    if (!d.agents.length) body.append(el("tr", {}, el("td", { colspan: "4" }, t("dash.none"))));
  }

  function onRoute(hash) {
    if (hash !== "#/dashboard" || !C.may(C.SEARCH_ROLES)) return false;
    C.show("view-dashboard");
    if (dash.data) render();
    load();
    return true;
  }

  function start() {
    C.hooks.routes.push(onRoute);
    C.hooks.rerender.push((view) => { if (view === "view-dashboard") render(); });
    C.hooks.reset.push(() => { dash.data = null; dash.range = "30d"; });
    for (const b of document.querySelectorAll("#view-dashboard .preset")) {
      b.addEventListener("click", () => { dash.range = b.dataset.range; load(); });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
