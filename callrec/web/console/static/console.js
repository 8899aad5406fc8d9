/* callrec console: a small single-page app over the /api/v1 JSON API.
 *
 * Rules it keeps: no inline script or style (strict CSP); text goes into the page only through
 * textContent (caller names and numbers are caller-supplied); the session is an HttpOnly cookie
 * and the CSRF token lives in memory only (never in localStorage or a URL); call ids travel in
 * the URL fragment, and so do a search's filters ("#/search?agent=204": reload, back and a shared link keep
 * the search; the fragment never reaches the server or its logs).  A moment in a call travels as "#/call/<id>/at/<ms>" (no personal
 * data: a call id and an offset).
 */
"use strict";
(function () {
  const MESSAGES = window.CALLREC_I18N;
  const LANGS = Object.keys(MESSAGES);
  const AUDIO_ROLES = ["admin", "supervisor", "agent", "security"];
  const SEARCH_ROLES = ["admin", "supervisor", "agent", "security"];
  const AUDIT_ROLES = ["admin", "auditor"];
  const TAG_ROLES = ["admin", "supervisor", "security"];
  const MANAGE_ROLES = ["admin", "security"];
  // Alerts name calls: the API filters them by the visibility rule, as it does the call list.
  const ALERT_ROLES = ["admin", "supervisor", "agent", "security"];
  const TRANSCRIPT_POLL_MS = 3000;  // while a job is queued or running, its progress is asked again

  const $ = (id) => document.getElementById(id);
  const state = {
    lang: LANGS.includes(document.documentElement.dataset.lang) ? document.documentElement.dataset.lang : "en",
    me: null,
    csrf: null,
    search: { query: null, cursors: [null], page: 0, data: null },
    audit: { query: null, cursors: [null], page: 0, data: null },
    alerts: { query: null, cursors: [null], page: 0, data: null },
    call: newCall(null),
  };

  function newCall(id) {
    // transcript: the API's document; job: {state, progress} when there is none; words: [{start, end, node}]
    // in time order for the highlight; seekMs: a moment to go to once the player knows the duration.
    return { id, data: null, audit: null, missing: false, transcript: null, job: null, words: [], current: null,
             poll: null, seekMs: null };
  }

  // ---- i18n -------------------------------------------------------------------------------------
  function t(key, vars) {
    let text = (MESSAGES[state.lang] && MESSAGES[state.lang][key]) || MESSAGES.en[key] || key;
    if (vars) {
      for (const [name, value] of Object.entries(vars)) text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  function translatePage() {
    document.documentElement.lang = state.lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
    $("lang").value = state.lang;
    updateTitle();
    if (UX) UX.timeZone();
  }

  function setLang(lang) {
    if (!LANGS.includes(lang)) return;
    state.lang = lang;
    status("");
    // Not a secret: the server reads it to serve the page in this language next time.
    document.cookie = "callrec_lang=" + lang + "; Path=/; Max-Age=31536000; SameSite=Strict";
    translatePage();
    renderWho();
    rerender();
  }

  const fmtCache = {};
  function fmtTime(iso) {
    if (!iso) return t("unknown");
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const key = state.lang;
    fmtCache[key] = fmtCache[key] || new Intl.DateTimeFormat(key, { dateStyle: "medium", timeStyle: "medium" });
    return fmtCache[key].format(d);
  }
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return t("unknown");
    const s = Math.round(Number(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return h ? h + ":" + pad(m) + ":" + pad(r) : m + ":" + pad(r);
  }
  function fmtNumber(n, digits) {
    if (n === null || n === undefined) return t("unknown");
    return Number(n).toLocaleString(state.lang, { maximumFractionDigits: digits === undefined ? 2 : digits });
  }
  function fmtClock(ms) {  // a moment in a call: m:ss (never rounded up past the word)
    if (ms === null || ms === undefined) return t("unknown");
    const s = Math.max(0, Math.floor(Number(ms) / 1000));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  function fmtPercent(share) {
    if (share === null || share === undefined) return t("unknown");
    return t("unit.percent", { n: fmtNumber(Number(share) * 100, 0) });
  }
  function fmtSeconds(ms) {
    if (ms === null || ms === undefined) return t("unknown");
    return t("unit.s", { n: fmtNumber(Number(ms) / 1000, 1) });
  }
  function fmtBool(v) { return v === null || v === undefined ? t("unknown") : (v ? t("yes") : t("no")); }
  function fmtEnum(prefix, v) { return v === null || v === undefined || v === "" ? t("unknown") : t(prefix + v); }
  function text(v) { return v === null || v === undefined || v === "" ? t("unknown") : String(v); }

  // ---- DOM helpers --------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fillDl(dl, pairs) {
    clear(dl);
    for (const [key, value, extra] of pairs) {
      const dd = el("dd", extra || {}, value);
      dl.append(el("dt", {}, t(key)), dd);
    }
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }
  function status(message) { $("status").textContent = message || ""; }
  // A 401 has already taken the user back to the log-in form with its own message.
  function reportError(e) { if (e.status !== 401) showError(UX ? UX.localize(e) : e.message); }

  // ---- API --------------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, data) { super(message); this.status = status; this.data = data; }
  }

  async function api(method, path, body, quiet) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, t("err.network"));
    }
    let data = null;
    if ((resp.headers.get("Content-Type") || "").includes("application/json")) {
      try { data = await resp.json(); } catch (e) { data = null; }
    }
    if (!resp.ok) {
      const message = data && typeof data.error === "string" ? data.error : t("err.generic", { status: resp.status });
      if (resp.status === 401 && !quiet && path !== "/api/v1/login") sessionEnded();
      throw new ApiError(resp.status, message, data);
    }
    return data;
  }

  function sessionEnded() {
    state.me = null;
    state.csrf = null;
    renderWho();
    showError(t("auth.expired"));
    location.hash = "#/login";
  }

  function may(roles) { return !!state.me && roles.includes(state.me.role); }

  // ---- header -------------------------------------------------------------------------------------------
  function renderWho() {
    const logged = !!state.me;
    $("whoami").hidden = !logged;
    $("logout").hidden = !logged;
    $("nav").hidden = !logged;
    if (logged) {
      $("who-user").textContent = state.me.user;
      $("who-role").textContent = t("role." + state.me.role);
      $("nav-search").hidden = !may(SEARCH_ROLES);
      $("nav-dashboard").hidden = !may(SEARCH_ROLES);
      $("nav-audit").hidden = !may(AUDIT_ROLES);
      $("nav-alerts").hidden = !may(ALERT_ROLES);
    }
  }

  // ---- views ----------------------------------------------------------------------------------------------
  const VIEWS = ["view-loading", "view-login", "view-dashboard", "view-search", "view-call", "view-alerts",
                 "view-audit"];
  const HEADINGS = { "view-login": "login-title", "view-search": "search-title", "view-call": "call-title",
                     "view-alerts": "alerts-title", "view-audit": "audit-title", "view-dashboard": "dash-title" };
  // What calls.js, dashboard.js and evidence.js add: routes they answer (true: handled), and what runs after a render.
  const hooks = { routes: [], rendered: [], rerender: [], reset: [], ready: [], callRendered: [] };
  function show(view) {
    // An error belongs to the page it happened on: leaving the page clears it.
    if (document.body.dataset.view !== view) { status(""); if (view !== "view-login") showError(""); }
    for (const v of VIEWS) $(v).hidden = v !== view;
    document.body.dataset.view = view;
    for (const [link, target] of [["nav-search", "view-search"], ["nav-alerts", "view-alerts"],
                                  ["nav-dashboard", "view-dashboard"],
                                  ["nav-audit", "view-audit"]]) {
      if (target === view) $(link).setAttribute("aria-current", "page"); else $(link).removeAttribute("aria-current");
    }
    updateTitle();
  }

  // The tab's title names the view, so screen readers and history entries tell them apart.
  function updateTitle() {
    const heading = HEADINGS[document.body.dataset.view];
    document.title = heading ? $(heading).textContent + " — " + t("app.title") : t("app.title");
  }

  function homeRoute() {
    // Supervisors (and QA) and security start on the dashboard; admins and agents on their calls.
    if (may(["supervisor", "security"])) return "#/dashboard";
    if (may(SEARCH_ROLES)) return "#/search";
    if (may(AUDIT_ROLES)) return "#/audit";
    return "#/login";
  }

  async function route() {
    const hash = location.hash || "";
    if (!state.me) {
      show("view-login");
      $("login-user").focus();
      return;
    }
    const callMatch = hash.match(/^#\/call\/([0-9a-fA-F-]{36})(?:\/at\/(\d{1,9})|\?t=(\d{1,6}(?:\.\d{1,3})?))?$/);
    if (callMatch) {
      // "?t=<seconds>": a shared moment; it sets where playing starts and does not play by itself.
      if (callMatch[3] !== undefined) return openCall(callMatch[1].toLowerCase(), null, Math.round(Number(callMatch[3]) * 1000));
      return openCall(callMatch[1].toLowerCase(), callMatch[2] === undefined ? null : Number(callMatch[2]));
    }
    for (const hook of hooks.routes) if (hook(hash)) return;
    if (hash === "#/search" && may(SEARCH_ROLES)) {
      show("view-search");
      if (!state.search.data) return runSearch(0);
      return renderResults();
    }
    const alertsMatch = hash.match(/^#\/alerts(?:\?(.*))?$/);
    if (alertsMatch && may(ALERT_ROLES)) {
      show("view-alerts");
      // "#/alerts?rule=NAME" (the dashboard's figure of one rule): that rule's alerts.
      const rule = new URLSearchParams(alertsMatch[1] || "").get("rule");
      if (rule !== null && rule !== $("alerts-form").elements.rule.value) {
        $("alerts-form").elements.rule.value = rule;
        return runAlerts(0);
      }
      if (!state.alerts.data) return runAlerts(0);
      return renderAlerts();
    }
    if (hash === "#/audit" && may(AUDIT_ROLES)) {
      show("view-audit");
      if (!state.audit.data) return runAudit(0);
      return renderAudit();
    }
    location.replace(homeRoute());
  }

  function rerender() {
    if (!state.me) return;
    const view = document.body.dataset.view;
    if (view === "view-search") renderResults();
    else if (view === "view-call") renderCall();
    else if (view === "view-audit") renderAudit();
    else if (view === "view-alerts") renderAlerts();
    for (const hook of hooks.rerender) hook(view);
  }

  // ---- log-in / log-out ---------------------------------------------------------------------------------
  async function onLogin(event) {
    event.preventDefault();
    showError("");
    const username = $("login-user").value.trim();
    const password = $("login-password").value;
    $("login-submit").disabled = true;
    try {
      const data = await api("POST", "/api/v1/login", { username, password });
      state.csrf = data.csrf_token;
      state.me = { user: data.user, role: data.role, extension: data.extension || null };
      $("login-password").value = "";
      resetCaches();
      renderWho();
      location.hash = homeRoute();
      await route();
    } catch (e) {
      showError(e.status === 401 ? t("auth.failed") : e.status === 429 ? t("auth.throttled") : e.message);
      $("login-password").value = "";
      $("login-password").focus();
    } finally {
      $("login-submit").disabled = false;
    }
  }

  async function onLogout() {
    try { await api("POST", "/api/v1/logout"); } catch (e) { /* the session may be gone already */ }
    state.me = null;
    state.csrf = null;
    resetCaches();
    renderWho();
    stopPlayer();
    location.hash = "#/login";
    show("view-login");
    status(t("auth.logged_out"));
  }

  function resetCaches() {
    state.search = { query: null, cursors: [null], page: 0, data: null };
    state.audit = { query: null, cursors: [null], page: 0, data: null };
    state.alerts = { query: null, cursors: [null], page: 0, data: null };
    clearTimeout(state.call.poll);
    state.call = newCall(null);
    for (const hook of hooks.reset) hook();
  }

  // ---- search ---------------------------------------------------------------------------------------------
  function isoFromLocal(value) {
    if (!value) return null;
    const d = new Date(value);  // datetime-local: the browser's time zone
    return isNaN(d) ? null : d.toISOString();
  }

  function searchQuery() {
    const f = $("search-form");
    const q = new URLSearchParams();
    const from = isoFromLocal(f.elements.from.value), to = isoFromLocal(f.elements.to.value);
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    for (const name of ["number", "direction", "agent", "consent", "recorded", "recording", "min_duration", "max_duration", "q",
                        "said", "silence_over", "agent_talk_over", "agent_talk_under", "overtalk_over"]) {
      const v = f.elements[name].value.trim();
      if (v) q.set(name, v);
    }
    for (const tag of f.elements.tag.value.split(",")) {
      if (tag.trim()) q.append("tag", tag.trim());
    }
    q.set("order", f.elements.order.value);
    return q;
  }

  function updateExportLinks(q) {
    for (const format of ["csv", "json"]) {
      const e = new URLSearchParams(q);
      e.set("format", format);
      // The CSV's local-time columns in the viewer's zone (the list shows local times too).
      if (format === "csv") e.set("tz", Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
      $("export-" + format).href = "/api/v1/calls/export?" + e.toString();
    }
  }

  let searchSeq = 0; // the latest search: answers to earlier ones arrive late and are dropped

  // landing: {page, cursors} when the address names a page of results (a reload, Back, a shared link): the
  // filters are already in the form, the page's keyset cursor and the earlier ones known come with it.
  async function runSearch(page, landing) {
    const s = state.search;
    const mine = ++searchSeq;
    if (page === 0 || !s.query || landing) {
      const asked = searchQuery();
      // An impossible filter is said in the user's language before anything is asked of the server.
      const min = asked.get("min_duration"), max = asked.get("max_duration");
      if (min !== null && max !== null && Number(min) > Number(max)) {
        searchSeq++;
        status("");
        showError(t("search.min_over_max"));
        return;
      }
      s.query = asked;
      s.cursors = landing ? landing.cursors : [null];
      page = landing ? landing.page : 0;
      updateExportLinks(s.query);
    }
    const q = new URLSearchParams(s.query);
    q.set("limit", $("search-form").elements.limit.value);
    if (s.cursors[page]) q.set("cursor", s.cursors[page]);
    showError("");
    status(t("search.searching"));
    $("results").setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "/api/v1/calls?" + q.toString());
      if (mine !== searchSeq) return; // a newer search is under way; its answer decides
      s.page = page;
      s.data = data;
      s.cursors = s.cursors.slice(0, page + 1);
      if (data.next_cursor) s.cursors.push(data.next_cursor);
      renderResults();
      for (const hook of hooks.rendered) hook(page);
      status(t("search.found", { n: data.items.length }));
    } catch (e) {
      if (mine !== searchSeq) return;
      status("");
      reportError(e);
    } finally {
      if (mine === searchSeq) $("results").removeAttribute("aria-busy");
    }
  }

  function renderResults() {
    const s = state.search, body = $("results-body");
    clear(body);
    const items = (s.data && s.data.items) || [];
    for (const c of items) {
      const who = c.caller_name ? c.caller_name + " <" + (c.caller_number || "") + ">" : text(c.caller_number);
      // An outbound call is named by whom the agent called, not by the agent's own extension.
      const party = c.direction === "outbound" ? text(c.called_number) : who;
      const link = el("a", { href: "#/call/" + c.id, "aria-label": t(c.direction === "outbound" ? "col.open_to" : "col.open",
                                                                     { who: party, when: fmtTime(c.started_at) }) },
        fmtTime(c.started_at));
      let rec = fmtEnum("rec.", c.recording_status);
      if (c.audio_deleted_at) rec = t("rec.deleted");
      const tr = el("tr", { dataset: { callId: c.id } },
        el("td", {}, link),
        el("td", {}, fmtEnum("direction.", c.direction)),
        el("td", {}, who),
        el("td", {}, text(c.called_number)),
        el("td", {}, c.agent_name ? text(c.agent) + " · " + c.agent_name : text(c.agent)),
        el("td", {}, c.consent ? t("consent." + c.consent) : t("consent.none")),
        el("td", {}, rec),
        el("td", { class: "num" }, fmtDuration(c.duration)),
        el("td", {}, (c.tags || []).join(", ")),
        el("td", { class: "transcript-summary" }, transcriptSummary(c.transcript)));
      if (c.confidential) {
        // Said in words too, not by the row's colour alone.
        tr.classList.add("confidential");
        tr.firstChild.append(" ", el("span", { class: "flag small" }, t("call.confidential")));
      }
      body.append(tr);
      if (c.hits && c.hits.length) body.append(hitsRow(c));
    }
    $("results-empty").hidden = items.length > 0 || !s.data;
    $("page-no").textContent = s.data ? t("search.page", { n: s.page + 1 }) : "";
    $("page-first").disabled = s.page === 0;
    // A shared link to page N knows that page's cursor only: the earlier ones are reached from the first page.
    $("page-prev").disabled = s.page === 0 || (s.page > 1 && !s.cursors[s.page - 1]);
    $("page-next").disabled = !(s.data && s.data.next_cursor);
  }

  // Where "said" matched: speaker, moment and the words around it, the match marked.  Every part is text
  // (a transcript is what a caller said): textContent and <mark>, never HTML.
  function hitsRow(c) {
    const list = el("ul", { class: "hits", "aria-label": t("search.hits") });
    for (const h of c.hits) {
      const snippet = el("span", { class: "snippet" });
      for (const [part, matched] of h.snippet || []) snippet.append(matched ? el("mark", {}, part) : String(part));
      const at = Math.max(0, Math.floor(Number(h.offset_ms) || 0));
      const link = el("a", { href: "#/call/" + c.id + "/at/" + at, class: "hit", dataset: { offsetMs: at },
                             "aria-label": t("search.hit_open", { speaker: t("speaker." + h.speaker), time: fmtClock(at),
                                                                  text: snippet.textContent.trim() }) },
        el("span", { class: "hit-speaker" }, t("speaker." + h.speaker)), " ",
        el("span", { class: "hit-time" }, fmtClock(at)), " ", snippet);
      // Found by similar spelling (nothing matched exactly): say so, the words may differ.
      if (h.fuzzy) link.append(" ", el("span", { class: "flag small" }, t("search.fuzzy")));
      list.append(el("li", {}, link));
    }
    return el("tr", { class: "hits-row", dataset: { hitsFor: c.id } }, el("td", { colspan: "10" }, list));
  }

  function jobKey(jobState) { return "tr.state_" + jobState; }

  // The list's summary of a call's transcript (contract: state, progress, talk statistics once done).
  function transcriptSummary(tr) {
    if (!tr || !tr.state || tr.state === "none") return "";
    if (tr.state === "running") return t("tr.running", { pct: fmtNumber((tr.progress || 0) * 100, 0) });
    if (tr.state !== "done") return t(jobKey(tr.state));
    const parts = [t("tr.sum_silence", { pct: fmtPercent(tr.silence_share) })];
    if (tr.agent_talk_ratio !== null && tr.agent_talk_ratio !== undefined) {
      parts.push(t("tr.sum_agent", { pct: fmtPercent(tr.agent_talk_ratio) }));
    }
    return parts.join(" · ");
  }

  // ---- one call --------------------------------------------------------------------------------------------
  function stopPlayer() {
    if (PLAYER) PLAYER.stop();
    const p = $("player");
    state.call.seekMs = null;
    p.pause();
    p.removeAttribute("src");
    p.load();
    p.dataset.state = "";
    $("player-state").textContent = "";
  }

  async function openCall(id, atMs, startMs) {
    show("view-call");
    if (state.call.id === id && (state.call.data || state.call.missing)) {
      if (state.call.data && !$("player").getAttribute("src")) {
        // Back from another page (which stopped the player): the source and the timeline again.
        setPlayerSource();
        await PLAYER.open(state.call.data);
      }
      renderCall();
      if (atMs !== null && atMs !== undefined) seekTo(atMs);
      if (startMs !== null && startMs !== undefined) PLAYER.startAt(startMs);
      return;
    }
    stopPlayer();
    clearTimeout(state.call.poll);
    state.call = newCall(id);
    clear($("transcript"));
    $("transcript-box").hidden = true;
    $("talk-box").hidden = true;
    $("call-body").hidden = true;
    $("call-missing").hidden = true;
    $("call-back").hidden = !may(SEARCH_ROLES);
    showError("");
    try {
      state.call.data = await api("GET", "/api/v1/calls/" + encodeURIComponent(id));
    } catch (e) {
      if (e.status === 404) state.call.missing = true;
      else reportError(e);
    }
    renderCall();
    if (state.call.data) {
      setPlayerSource();
      loadCallAudit();
      loadTranscript();
      loadTagsInUse();
      await PLAYER.open(state.call.data);
      // Opened from a search hit or an alert: go to that moment and play from there.
      if (atMs !== null && atMs !== undefined) seekTo(atMs);
      if (startMs !== null && startMs !== undefined) PLAYER.startAt(startMs);
    }
    $("call-title").focus();
  }

  // ---- the transcript beside the player ---------------------------------------------------------------
  async function loadTranscript() {
    const id = state.call.id;
    clearTimeout(state.call.poll);
    const c = state.call.data, rec = (c && c.recording) || {};
    // The transcript is read like the recording (same roles, same visibility, audited by the API).
    if (!c || !may(AUDIO_ROLES) || (rec.status !== "ready" && !c.transcript)) {
      $("transcript-box").hidden = true;
      return;
    }
    try {
      const data = await api("GET", "/api/v1/calls/" + encodeURIComponent(id) + "/transcript");
      if (state.call.id !== id) return;
      state.call.transcript = data;
      state.call.job = null;
    } catch (e) {
      if (state.call.id !== id) return;
      if (e.status !== 404) { reportError(e); return; }
      state.call.transcript = null;
      state.call.job = (e.data && e.data.job) || { state: null, progress: null };
    }
    renderTranscript();
    const job = state.call.job;
    if (job && (job.state === "pending" || job.state === "running")) {
      state.call.poll = setTimeout(() => {
        if (state.call.id === id && document.body.dataset.view === "view-call") loadTranscript();
      }, TRANSCRIPT_POLL_MS);
    }
  }

  function transcriptState() {
    const tr = state.call.transcript, job = state.call.job;
    if (tr) {
      const parts = [t("tr.done", { when: fmtTime(tr.transcribed_at), language: text(tr.language) })];
      if (tr.redacted) parts.push(t("tr.redacted", { n: tr.redacted }));
      return parts.join(" ");
    }
    if (!job || !job.state) return t("tr.state_none");
    if (job.state === "running") return t("tr.running", { pct: fmtNumber((job.progress || 0) * 100, 0) });
    return t(jobKey(job.state));
  }

  function renderTranscript() {
    const box = $("transcript-box"), list = $("transcript"), tr = state.call.transcript;
    box.hidden = false;
    const stateLine = $("transcript-state");
    stateLine.textContent = transcriptState();
    stateLine.dataset.state = tr ? "done" : ((state.call.job && state.call.job.state) || "none");
    clear(list);
    state.call.words = [];
    state.call.current = null;
    const segments = (tr && tr.segments) || [];
    $("transcript-hint").hidden = segments.length === 0;
    for (const seg of segments) {
      const time = el("button", { type: "button", class: "turn-time",
                                  "aria-label": t("tr.play_from", { time: fmtClock(seg.start_ms) }) },
                      fmtClock(seg.start_ms));
      time.addEventListener("click", () => seekTo(seg.start_ms));
      const para = el("p", { class: "turn-text" });
      const words = seg.words || [];
      if (!words.length) para.append(String(seg.text || "").trim());
      words.forEach((w, i) => {
        if (i) para.append(" ");
        const span = el("span", { class: "word", dataset: { startMs: w.start_ms, endMs: w.end_ms } },
                        String(w.text).trim());
        para.append(span);
        state.call.words.push({ start: w.start_ms, end: w.end_ms, node: span });
      });
      list.append(el("li", { class: "turn", dataset: { speaker: seg.speaker, seq: seg.seq } },
        el("div", { class: "turn-head" }, el("span", { class: "speaker" }, t("speaker." + seg.speaker)), " ", time),
        para));
    }
    // Stereo turns overlap: the highlight looks words up by start time across both speakers.
    state.call.words.sort((a, b) => a.start - b.start);
    renderTalk();
    highlightWord();
  }

  function renderTalk() {
    const tr = state.call.transcript;
    $("talk-box").hidden = !tr;
    if (!tr) return;
    const talk = tr.talk || {};
    const pairs = [];
    if (tr.stereo) {
      pairs.push(["talk.caller", fmtDuration(talk.caller_talk_ms / 1000), { id: "talk-caller" }],
                 ["talk.agent", fmtDuration(talk.agent_talk_ms / 1000), { id: "talk-agent" }],
                 ["talk.ratio", fmtPercent(talk.agent_talk_ratio), { id: "talk-ratio" }]);
    }
    pairs.push(["talk.total", fmtDuration((talk.talk_ms || 0) / 1000), { id: "talk-total" }],
               ["talk.overtalk", fmtSeconds(talk.overtalk_ms), { id: "talk-overtalk" }],
               ["talk.silence", fmtPercent(talk.silence_share), { id: "talk-silence" }],
               ["talk.longest_silence", fmtSeconds(talk.longest_silence_ms), { id: "talk-longest" }]);
    fillDl($("talk"), pairs);
  }

  // Go to a moment of the recording and play from there.  With preload="none" the player knows no
  // duration yet: the moment waits for its metadata (loadedmetadata), which play() fetches.
  function seekTo(ms) {
    const p = $("player");
    if ($("player-box").hidden || !p.getAttribute("src")) return;
    if (p.readyState >= 1) p.currentTime = ms / 1000;
    else state.call.seekMs = ms;
    if (p.paused) {
      p.play().catch(() => { /* refused by the browser: the moment is kept for when the user presses play */ });
    }
  }

  function onPlayerMetadata() {
    const ms = state.call.seekMs;
    state.call.seekMs = null;
    if (ms !== null && ms !== undefined) $("player").currentTime = ms / 1000;
  }

  // The word being played, found by binary search over the words in time order (timeupdate fires a few
  // times a second; a long call has thousands of words).
  function highlightWord() {
    const words = state.call.words, p = $("player");
    const ms = p.currentTime * 1000;
    let lo = 0, hi = words.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (words[mid].start <= ms) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    // Between words the last one stays lit briefly, then nothing is (a pause, silence).
    const node = found >= 0 && ms <= words[found].end + 300 && (p.currentTime > 0 || !p.paused) ? words[found].node : null;
    if (node === state.call.current) return;
    if (state.call.current) state.call.current.classList.remove("current");
    state.call.current = node;
    if (!node) return;
    node.classList.add("current");
    const list = $("transcript");
    const top = node.offsetTop - list.offsetTop;
    if (top < list.scrollTop || top > list.scrollTop + list.clientHeight - node.offsetHeight) {
      list.scrollTop = Math.max(0, top - list.clientHeight / 3);
    }
  }

  function onTranscriptClick(event) {
    const word = event.target.closest ? event.target.closest(".word") : null;
    if (word) seekTo(Number(word.dataset.startMs));
  }

  function setPlayerSource() {
    const c = state.call.data, rec = c.recording || {};
    const playable = rec.status === "ready" && !rec.deleted_at && may(AUDIO_ROLES);
    // The box stays without audio: the timeline and the badges explain the call.
    $("pl-controls").hidden = !playable;
    $("pl-keys").hidden = !playable;
    const why = !may(AUDIO_ROLES) ? t("call.audio_not_allowed")
      : rec.deleted_at ? t("call.audio_deleted", { when: fmtTime(rec.deleted_at), who: text(rec.deleted_by) })
      : fmtEnum("rec.", rec.status);
    $("no-audio").hidden = playable;
    $("no-audio").textContent = playable ? "" : t("call.no_audio", { why });
    if (!playable) { $("player").removeAttribute("src"); return; }
    const base = "/api/v1/calls/" + encodeURIComponent(c.id) + "/audio";
    // preload="none": nothing is fetched (and no listen is audited) until the user presses play.
    $("player").src = base;
    $("download").href = base + "?download=1";
  }

  function renderCall() {
    const c = state.call.data;
    $("call-missing").hidden = !state.call.missing;
    $("call-body").hidden = !c;
    if (!c) { $("call-title").textContent = t("call.title"); return; }
    const who = c.caller_name ? c.caller_name + " <" + (c.caller_number || "") + ">" : text(c.caller_number);
    // An outbound call is titled by whom it was made to.
    $("call-title").textContent = c.direction === "outbound" && c.called_number
      ? t("call.title_to", { who: c.called_number }) : t("call.title_of", { who });
    updateTitle();
    const flags = $("call-flags");
    clear(flags);
    if (c.confidential) {
      flags.append(el("span", { class: "flag", id: "flag-confidential" }, c.confidential_by
        ? t("call.confidential_by", { who: c.confidential_by, when: fmtTime(c.confidential_at) }) : t("call.confidential")));
    }
    if (c.legal_hold) {
      flags.append(el("span", { class: "flag", id: "flag-hold" }, c.legal_hold_by
        ? t("call.hold_by", { who: c.legal_hold_by, when: fmtTime(c.legal_hold_at), why: text(c.legal_hold_reason) })
        : t("call.legal_hold")));
    }
    const duration = c.duration !== undefined ? c.duration
      : (c.started_at && c.ended_at ? (new Date(c.ended_at) - new Date(c.started_at)) / 1000 : null);
    fillDl($("facts"), [
      ["fact.id", c.id, { class: "mono" }],
      ["fact.started_at", fmtTime(c.started_at)],
      ["fact.ended_at", fmtTime(c.ended_at)],
      ["fact.duration", fmtDuration(duration)],
      ["fact.direction", fmtEnum("direction.", c.direction)],
      ["fact.caller", who],
      ["fact.called", text(c.called_number)],
      ["fact.agent", text(c.agent)],
      ["fact.language", text(c.language)],
      ["fact.policy_rule", text(c.policy_rule)],
      ["fact.context", text(c.context)],
      ["fact.hangup", c.hangup_cause_text ? c.hangup_cause_text + " (" + c.hangup_cause + ")" : text(c.hangup_cause)],
    ]);
    const ev = c.evidence || {};
    fillDl($("evidence"), [
      ["ev.mode", fmtEnum("mode.", c.consent_mode)],
      ["ev.consent", ev.consent ? t("consent." + ev.consent) : t("consent.none"), { id: "ev-consent" }],
      ["ev.notice_prompt", text(ev.notice_prompt), { class: "mono", id: "ev-prompt" }],
      ["ev.sha256", text(ev.sha256), { class: "mono hash" }],
      ["ev.duration", ev.duration === null || ev.duration === undefined ? t("unknown") : t("unit.s", { n: fmtNumber(ev.duration) })],
      ["ev.started_at", fmtTime(ev.started_at)],
      ["ev.finished_at", fmtTime(ev.finished_at)],
      ["ev.completed", fmtBool(ev.completed), { id: "ev-completed" }],
      ["ev.consent_key", text(ev.consent_key), { id: "ev-key" }],
      ["ev.keys_pressed", text(ev.keys_pressed)],
      ["ev.consent_at", fmtTime(ev.consent_at)],
    ]);
    const rec = c.recording || {};
    const recPairs = [
      ["rf.status", rec.deleted_at ? t("rec.deleted") : fmtEnum("rec.", rec.status), { id: "rf-status" }],
      ["rf.duration", rec.duration === null || rec.duration === undefined ? t("unknown") : fmtDuration(rec.duration)],
      ["rf.bytes", rec.bytes === null || rec.bytes === undefined ? t("unknown") : t("unit.bytes", { n: fmtNumber(rec.bytes, 0) })],
      ["rf.sha256", text(rec.sha256), { class: "mono hash" }],
      ["rf.rms", rec.rms_dbfs === null || rec.rms_dbfs === undefined ? t("unknown") : t("unit.dbfs", { n: fmtNumber(rec.rms_dbfs, 1) })],
      ["rf.peak", rec.peak_dbfs === null || rec.peak_dbfs === undefined ? t("unknown") : t("unit.dbfs", { n: fmtNumber(rec.peak_dbfs, 1) })],
    ];
    if (rec.deleted_at) recPairs.push(["rf.deleted_at", fmtTime(rec.deleted_at)], ["rf.deleted_by", text(rec.deleted_by)]);
    fillDl($("recording"), recPairs);
    renderTags();
    renderManage();
    renderPauses();
    renderParties();
    renderCallAudit();
    PLAYER.render();
    tagSuggestions();
    const p = $("player");
    if (p.dataset.state) $("player-state").textContent = t("player." + p.dataset.state);
    if (state.call.transcript || state.call.job) renderTranscript();
    for (const hook of hooks.callRendered) hook();
  }

  function renderTags() {
    const c = state.call.data, list = $("tags");
    clear(list);
    const tags = c.tags || [];
    const canTag = may(TAG_ROLES);
    for (const tag of tags) {
      const li = el("li", {}, el("span", {}, tag));
      if (canTag) {
        const b = el("button", { type: "button", class: "tag-remove", "aria-label": t("call.tag_remove", { tag }) }, "×");
        b.addEventListener("click", () => changeTag("DELETE", tag));
        li.append(b);
      }
      list.append(li);
    }
    if (!tags.length) list.append(el("li", { class: "muted" }, t("call.no_tags")));
    $("tag-form").hidden = !canTag;
  }

  async function changeTag(method, tag) {
    const id = state.call.id;
    showError("");
    try {
      if (method === "POST") await api("POST", "/api/v1/calls/" + encodeURIComponent(id) + "/tags", { tag });
      else await api("DELETE", "/api/v1/calls/" + encodeURIComponent(id) + "/tags/" + encodeURIComponent(tag));
      const tags = new Set(state.call.data.tags || []);
      if (method === "POST") tags.add(tag); else tags.delete(tag);
      state.call.data.tags = Array.from(tags).sort();
      state.search.data = null;  // the results table shows tags: fetch it again next time
      renderTags();
      loadCallAudit();
    } catch (e) {
      if (e.status === 403) showError(state.csrf ? t("err.forbidden") : t("err.csrf"));
      else reportError(e);
    }
  }

  function renderManage() {
    const c = state.call.data, rec = c.recording || {};
    $("manage-box").hidden = !may(MANAGE_ROLES);
    $("confidential-toggle").textContent = c.confidential ? t("call.make_public") : t("call.make_confidential");
    $("hold-toggle").textContent = c.legal_hold ? t("call.hold_release") : t("call.hold_set");
    // Under a legal hold the recording cannot be deleted (the API answers 409): no button for it.
    $("delete-audio").hidden = !(rec.status === "ready" && !rec.deleted_at && !c.legal_hold);
  }

  async function toggleHold() {
    const c = state.call.data, id = state.call.id;
    const body = { legal_hold: !c.legal_hold };
    if (body.legal_hold) {
      const reason = await UX.ask({ title: t("call.hold_set"), body: t("call.hold_reason"), label: t("call.hold_reason_label"),
                                    ok: t("call.hold_set"), required: true });
      if (!reason) return;
      body.reason = reason;
    }
    showError("");
    try {
      const data = await api("PUT", "/api/v1/calls/" + encodeURIComponent(id) + "/legal-hold", body);
      if (state.call.id !== id) return;
      c.legal_hold = data.legal_hold;
      c.legal_hold_by = data.legal_hold_by;
      c.legal_hold_at = data.legal_hold_at;
      c.legal_hold_reason = data.legal_hold_reason;
      renderCall();
      loadCallAudit();
    } catch (e) {
      if (e.status === 403) showError(state.csrf ? t("err.forbidden") : t("err.csrf"));
      else reportError(e);
    }
  }

  async function toggleConfidential() {
    const c = state.call.data, id = state.call.id;
    showError("");
    try {
      const data = await api("PUT", "/api/v1/calls/" + encodeURIComponent(id) + "/confidential",
        { confidential: !c.confidential });
      if (state.call.id !== id) return;
      c.confidential = data.confidential;
      c.confidential_by = state.me.user;
      c.confidential_at = new Date().toISOString();
      state.search.data = null;
      renderCall();
      loadCallAudit();
    } catch (e) {
      if (e.status === 403) showError(state.csrf ? t("err.forbidden") : t("err.csrf"));
      else reportError(e);
    }
  }

  async function deleteAudio() {
    const id = state.call.id;
    if (!await UX.ask({ title: t("call.delete_audio"), body: t("call.delete_confirm"), ok: t("call.delete_audio"),
                        danger: true })) return;
    showError("");
    try {
      const data = await api("DELETE", "/api/v1/calls/" + encodeURIComponent(id) + "/audio");
      if (state.call.id !== id) return;
      stopPlayer();
      const rec = state.call.data.recording || (state.call.data.recording = {});
      rec.deleted_at = data.deleted_at;
      rec.deleted_by = data.deleted_by;
      rec.available = false;
      // The transcript went with the recording (the deletion gate removes both).
      state.call.transcript = null;
      state.call.job = null;
      state.call.words = [];
      clear($("transcript"));
      $("transcript-box").hidden = true;
      $("talk-box").hidden = true;
      state.search.data = null;
      renderCall();
      setPlayerSource();
      status(t("call.deleted_now"));
      loadCallAudit();
    } catch (e) {
      if (e.status === 403) showError(state.csrf ? t("err.forbidden") : t("err.csrf"));
      else reportError(e);
    }
  }

  function renderPauses() {
    const pauses = state.call.data.pauses || [];
    $("pauses-box").hidden = pauses.length === 0;
    const body = $("pauses");
    clear(body);
    for (const p of pauses) {
      body.append(el("tr", {},
        el("td", {}, fmtTime(p.paused_at)),
        el("td", {}, fmtTime(p.resumed_at)),
        el("td", {}, text(p.paused_by))));
    }
  }

  function renderParties() {
    const parties = state.call.data.parties || [];
    $("parties-box").hidden = parties.length === 0;
    const body = $("parties");
    clear(body);
    for (const p of parties) {
      body.append(el("tr", {},
        el("td", {}, fmtEnum("party.", p.role)),
        el("td", {}, text(p.number)),
        el("td", {}, text(p.name)),
        el("td", {}, fmtTime(p.joined_at)),
        el("td", {}, fmtTime(p.left_at))));
    }
  }

  async function loadCallAudit() {
    if (!may(AUDIT_ROLES) || !state.call.id) return;
    const id = state.call.id;
    try {
      const data = await api("GET", "/api/v1/audit?limit=100&call_id=" + encodeURIComponent(id));
      if (state.call.id !== id) return;
      state.call.audit = data.items;
      renderCallAudit();
    } catch (e) {
      reportError(e);
    }
  }

  function auditRow(a, withCall) {
    const cells = [
      el("td", {}, fmtTime(a.at)),
      el("td", {}, text(a.actor)),
      el("td", {}, a.role ? t("role." + a.role) : t("unknown")),
      el("td", { dataset: { action: a.action } }, MESSAGES.en["action." + a.action] ? t("action." + a.action) : a.action),
    ];
    if (withCall) {
      cells.push(el("td", { class: "mono hash" }, a.call_id
        ? el("a", { href: "#/call/" + a.call_id }, a.call_id) : t("unknown")));
      cells.push(el("td", { class: "between" }, a.call_id ? UX.between(a.call) : ""));
    }
    cells.push(el("td", { class: "details" }, UX.details(a.action, a.details)));
    if (withCall) cells.push(el("td", {}, text(a.remote)));
    return el("tr", { dataset: { action: a.action } }, ...cells);
  }

  function renderCallAudit() {
    const box = $("call-audit-box");
    box.hidden = !may(AUDIT_ROLES);
    const body = $("call-audit-body");
    clear(body);
    const items = state.call.audit || [];
    for (const a of items) body.append(auditRow(a, false));
    if (state.call.audit && !items.length) {
      body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, t("call.audit_empty"))));
    }
  }

  function onPlayerEvent(event) {
    const p = $("player");
    const map = { playing: "playing", pause: "paused", ended: "ended", error: "error", waiting: "loading" };
    const s = map[event.type];
    if (!s) return;
    if (s === "paused" && p.ended) return;
    p.dataset.state = s;
    $("player-state").textContent = t("player." + s);
    // The first audio request of a listen is audited: show the new entry.
    if (s === "playing") loadCallAudit();
  }

  // ---- alerts -----------------------------------------------------------------------------------------------
  function alertsQuery() {
    const f = $("alerts-form");
    const q = new URLSearchParams();
    const rule = f.elements.rule.value.trim();
    if (rule) q.set("rule", rule);
    const since = isoFromLocal(f.elements.since.value);
    if (since) q.set("since", since);
    return q;
  }

  async function runAlerts(page) {
    const s = state.alerts;
    if (page === 0 || !s.query) {
      s.query = alertsQuery();
      s.cursors = [null];
      page = 0;
    }
    const q = new URLSearchParams(s.query);
    q.set("limit", "100");
    if (s.cursors[page]) q.set("cursor", s.cursors[page]);
    showError("");
    $("alerts-results").setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", "/api/v1/alerts?" + q.toString());
      s.page = page;
      s.data = data;
      s.cursors = s.cursors.slice(0, page + 1);
      if (data.next) s.cursors.push(data.next);
      renderAlerts();
    } catch (e) {
      reportError(e);
    } finally {
      $("alerts-results").removeAttribute("aria-busy");
    }
  }

  function renderAlerts() {
    const s = state.alerts, body = $("alerts-body");
    clear(body);
    const items = (s.data && s.data.items) || [];
    for (const a of items) {
      const hasMoment = a.offset_ms !== null && a.offset_ms !== undefined;
      const at = hasMoment ? Math.max(0, Math.floor(Number(a.offset_ms))) : null;
      const link = el("a", { href: "#/call/" + a.call_id + (hasMoment ? "/at/" + at : ""), class: "alert-call" },
                      hasMoment ? t("alerts.at_moment", { time: fmtClock(at) }) : t("alerts.open_call"));
      body.append(el("tr", { dataset: { alertId: a.id, callId: a.call_id } },
        el("td", {}, fmtTime(a.created_at)),
        el("td", {}, text(a.rule)),
        el("td", {}, a.kind ? t("alertkind." + a.kind) : t("unknown")),
        el("td", {}, text(a.phrase)),
        el("td", {}, a.speaker ? t("speaker." + a.speaker) : t("speaker.any")),
        el("td", {}, link)));
    }
    $("alerts-empty").hidden = items.length > 0 || !s.data;
    $("alerts-page-no").textContent = s.data ? t("search.page", { n: s.page + 1 }) : "";
    $("alerts-first").disabled = s.page === 0;
    $("alerts-prev").disabled = s.page === 0;
    $("alerts-next").disabled = !(s.data && s.data.next);
  }

  // ---- audit trail ----------------------------------------------------------------------------------------
  function auditQuery() {
    const f = $("audit-form");
    const q = new URLSearchParams();
    const from = isoFromLocal(f.elements.from.value), to = isoFromLocal(f.elements.to.value);
    if (from) q.set("from", from);
    if (to) q.set("to", to);
    for (const name of ["actor", "action", "call_id", "caller", "agent"]) {
      const v = f.elements[name].value.trim();
      if (v) q.set(name, v);
    }
    return q;
  }

  async function runAudit(page) {
    const s = state.audit;
    // A call id or a piece of one: said here, in the user's words, before asking the API.
    const piece = $("audit-form").elements.call_id.value.trim();
    if (piece && !/^[0-9a-fA-F-]{4,36}$/.test(piece)) {
      showError(t("audit.call_bad"));
      $("a-call").setAttribute("aria-invalid", "true");
      return;
    }
    $("a-call").removeAttribute("aria-invalid");
    if (page === 0 || !s.query) {
      s.query = auditQuery();
      s.cursors = [null];
      page = 0;
    }
    const q = new URLSearchParams(s.query);
    q.set("limit", "100");
    if (s.cursors[page]) q.set("cursor", s.cursors[page]);
    showError("");
    try {
      const data = await api("GET", "/api/v1/audit?" + q.toString());
      s.page = page;
      s.data = data;
      s.cursors = s.cursors.slice(0, page + 1);
      if (data.next_cursor) s.cursors.push(data.next_cursor);
      renderAudit();
    } catch (e) {
      reportError(e);
    }
  }

  function renderAudit() {
    const s = state.audit, body = $("audit-body");
    clear(body);
    const items = (s.data && s.data.items) || [];
    for (const a of items) body.append(auditRow(a, true));
    $("audit-empty").hidden = items.length > 0 || !s.data;
    $("audit-page-no").textContent = s.data ? t("search.page", { n: s.page + 1 }) : "";
    $("audit-first").disabled = s.page === 0;
    $("audit-prev").disabled = s.page === 0;
    $("audit-next").disabled = !(s.data && s.data.next_cursor);
  }

  // ---- tag suggestions: the tags in use on the calls this user sees (GET /api/v1/tags) --------------------
  let tagsInUse = null;
  async function loadTagsInUse() {
    if (!may(TAG_ROLES)) return;
    try {
      tagsInUse = ((await api("GET", "/api/v1/tags")).items || []).map((x) => x.tag);
      tagSuggestions();
    } catch (e) { /* suggestions only: the tag form works without them */ }
  }
  function tagSuggestions() {
    const own = new Set((state.call.data && state.call.data.tags) || []);
    const list = $("tag-suggestions");
    clear(list);
    for (const tag of tagsInUse || []) if (!own.has(tag)) list.append(el("option", { value: tag }));
  }

  // ---- the player and the page helpers (player.js, ux.js) ---------------------------------------------
  const CTX = { $, t, el, clear, api, may, fmtTime, fmtDuration, fmtClock, state, text, reportError, seekTo,
                AUDIO_ROLES };
  const UX = window.CallrecUx(CTX);
  const PLAYER = window.CallrecPlayer(CTX);

  // ---- start ------------------------------------------------------------------------------------------------
  async function start() {
    UX.watchTables();
    PLAYER.install();
    translatePage();
    $("lang").addEventListener("change", (e) => setLang(e.target.value));
    $("login-form").addEventListener("submit", onLogin);
    $("logout").addEventListener("click", onLogout);
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(0); });
    $("search-form").addEventListener("reset", () => setTimeout(() => runSearch(0), 0));
    $("page-first").addEventListener("click", () => runSearch(0));
    $("page-prev").addEventListener("click", () => runSearch(Math.max(0, state.search.page - 1)));
    $("page-next").addEventListener("click", () => runSearch(state.search.page + 1));
    $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); runAudit(0); });
    $("audit-form").addEventListener("reset", () => setTimeout(() => runAudit(0), 0));
    $("audit-first").addEventListener("click", () => runAudit(0));
    $("audit-prev").addEventListener("click", () => runAudit(Math.max(0, state.audit.page - 1)));
    $("audit-next").addEventListener("click", () => runAudit(state.audit.page + 1));
    $("call-audit-refresh").addEventListener("click", loadCallAudit);
    $("alerts-form").addEventListener("submit", (e) => { e.preventDefault(); runAlerts(0); });
    $("alerts-form").addEventListener("reset", () => setTimeout(() => runAlerts(0), 0));
    $("alerts-first").addEventListener("click", () => runAlerts(0));
    $("alerts-prev").addEventListener("click", () => runAlerts(Math.max(0, state.alerts.page - 1)));
    $("alerts-next").addEventListener("click", () => runAlerts(state.alerts.page + 1));
    $("transcript").addEventListener("click", onTranscriptClick);
    $("player").addEventListener("loadedmetadata", onPlayerMetadata);
    for (const type of ["timeupdate", "seeked"]) $("player").addEventListener(type, highlightWord);
    $("confidential-toggle").addEventListener("click", toggleConfidential);
    $("hold-toggle").addEventListener("click", toggleHold);
    $("delete-audio").addEventListener("click", deleteAudio);
    $("tag-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const tag = $("tag-new").value.trim();
      if (tag) changeTag("POST", tag).then(() => { $("tag-new").value = ""; });
    });
    for (const type of ["playing", "pause", "ended", "error", "waiting"]) $("player").addEventListener(type, onPlayerEvent);
    window.addEventListener("hashchange", () => {
      if (!location.hash.startsWith("#/call/")) { stopPlayer(); clearTimeout(state.call.poll); }
      route();
    });

    try {
      // A reload keeps the cookie but not the in-memory CSRF token: who we are, and a fresh token.
      const session = await api("GET", "/console/session", undefined, true);
      state.me = { user: session.user, role: session.role, extension: session.extension || null };
      state.csrf = session.csrf_token;
    } catch (e) {
      state.me = null;
      if (e.status && e.status !== 401) showError(e.message);
    }
    renderWho();
    for (const hook of hooks.ready) hook();
    document.body.dataset.ready = "1";
    await route();
  }

  // For calls.js and dashboard.js (loaded after this file): the helpers they share with the rest of the page.
  window.CALLREC_CONSOLE = { $, t, el, clear, api, state, hooks, may, show, status, showError, reportError, fmtTime,
                             fmtDuration, fmtNumber, fmtPercent, runSearch, renderResults, searchQuery,
                             updateExportLinks, sessionEnded, SEARCH_ROLES };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
