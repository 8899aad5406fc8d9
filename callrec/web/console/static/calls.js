/* callrec console: the calls list that keeps its place and forgives.
 *
 * The search lives in the URL fragment ("#/search?agent=204&consent=declined", and "&page=2&cursor=..." after the
 * first page): a reload, the back button and a shared link open the same search and page (the fragment never reaches the server, its logs or a Referer).  Date
 * presets, chips for the active filters, a total count, saved searches, whole-row click and keys (/ j k Enter).
 * Text goes into the page through textContent only.
 */
"use strict";
(function () {
  const C = window.CALLREC_CONSOLE;
  const { $, t, el, clear, api } = C;
  const LABELS = { from: "f.from", to: "f.to", number: "f.number", direction: "f.direction", agent: "f.agent",
                   consent: "f.consent", recorded: "f.recorded", recording: "f.recording", min_duration: "f.min_duration",
                   max_duration: "f.max_duration", tag: "f.tags", q: "f.q", said: "f.said", silence_over: "f.silence_over",
                   agent_talk_over: "f.agent_talk_over", agent_talk_under: "f.agent_talk_under",
                   overtalk_over: "f.overtalk_over" };
  const place = { hash: "#/search", scroll: 0, opened: null, selected: -1, fromUrl: false, saved: [] };

  // ---- the search in the URL -----------------------------------------------------------------------------
  function queryString(q) {
    const out = new URLSearchParams(q);
    const limit = $("search-form").elements.limit.value;
    if (limit !== "50") out.set("limit", limit);
    if (out.get("order") === "desc") out.delete("order");
    return out.toString();
  }

  // The page of results in the address too: its number and its keyset cursor (an opaque position in the
  // list, no secret).  The cursors of the pages before it ride in the history entry's state, so a reload and
  // Back keep "Previous" working; a shared link has only its own page's cursor.
  function pageParams() {
    const s = C.state.search;
    const cursor = s.page > 0 ? s.cursors[s.page] : null;
    return cursor ? "page=" + (s.page + 1) + "&cursor=" + encodeURIComponent(cursor) : "";
  }
  function listHash() {
    const qs = [queryString(C.state.search.query), pageParams()].filter((x) => x).join("&");
    return "#/search" + (qs ? "?" + qs : "");
  }
  function normalHash(hash) {
    const qs = hash.startsWith("#/search?") ? new URLSearchParams(hash.slice("#/search?".length)).toString() : "";
    return "#/search" + (qs ? "?" + qs : "");
  }
  // Where the list was when a call was opened: kept in this history entry, so it outlives a reload.
  function remember(callId) {
    place.scroll = window.scrollY;
    place.opened = callId;
    history.replaceState(Object.assign({}, history.state, { scroll: place.scroll, opened: callId }), "");
  }
  function restorePlace(scroll, opened) {
    window.scrollTo(0, scroll);
    if (opened) {
      const link = document.querySelector('#results-body tr[data-call-id="' + opened + '"] a');
      if (link) link.focus({ preventScroll: true });
    }
  }

  function pad(n) { return String(n).padStart(2, "0"); }
  function localValue(iso) {  // ISO -> the datetime-local field's value, in the browser's time zone
    const d = new Date(iso);
    if (isNaN(d)) return "";
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function fillForm(params) {
    const f = $("search-form");
    // Not f.reset(): its reset event starts a search of its own.
    for (const field of f.elements) {
      if (field.tagName === "SELECT") {
        const preset = [...field.options].findIndex((o) => o.defaultSelected);
        field.selectedIndex = preset < 0 ? 0 : preset;
      } else if (field.tagName === "INPUT") field.value = "";
    }
    for (const [key, value] of params) {
      if (key === "tag") continue;
      const field = f.elements[key];
      if (!field) continue;
      if (key === "from" || key === "to") field.value = localValue(value);
      else if (key === "limit" && ![...field.options].some((o) => o.value === value)) {
        field.add(new Option(value, value));
        field.value = value;
      } else field.value = value;
    }
    f.elements.tag.value = params.getAll("tag").join(", ");
    if (!params.get("order")) f.elements.order.value = "desc";
    if (!params.get("limit")) f.elements.limit.value = "50";
  }

  function onRoute(hash) {
    if (!(hash === "#/search" || hash.startsWith("#/search?")) || !C.may(C.SEARCH_ROLES)) return false;
    C.show("view-search");
    const params = new URLSearchParams(hash.startsWith("#/search?") ? hash.slice("#/search?".length) : "");
    const s = C.state.search;
    if (s.data && s.query && listHash() === normalHash(hash)) {
      // Back from a call: the same search, page and place.
      C.renderResults();
      decorate();
      restorePlace(place.scroll, place.opened);
      return true;
    }
    const pageNo = params.get("page"), cursor = params.get("cursor");
    params.delete("page");
    params.delete("cursor");
    fillForm(params);
    place.fromUrl = true;
    let landing = null;
    if (cursor && /^[1-9][0-9]{0,5}$/.test(pageNo || "") && Number(pageNo) > 1) {
      const page = Number(pageNo) - 1;
      const kept = history.state && Array.isArray(history.state.cursors) ? history.state.cursors : null;
      // The earlier cursors of this entry, if they lead to this very page; otherwise only this page's.
      const cursors = kept && kept.length === page + 1 && kept[page] === cursor ? kept.slice() : new Array(page + 1);
      cursors[0] = null;
      cursors[page] = cursor;
      landing = { page, cursors };
    }
    C.runSearch(landing ? landing.page : 0, landing);
    return true;
  }

  // After each page of results: the URL, the count, the chips.
  function onRendered(page) {
    const s = C.state.search;
    const fromUrl = place.fromUrl;
    place.hash = listHash();
    // An answer that arrives after the user went elsewhere (a call, the dashboard) leaves the address alone.
    const here = location.hash === "" || location.hash === "#/search" || location.hash.startsWith("#/search?");
    const entry = { cursors: s.cursors.slice(0, s.page + 1) };
    if (here) {
      if (fromUrl) history.replaceState(Object.assign({}, history.state, entry), "", place.hash);
      else if (location.hash !== place.hash) history.pushState(entry, "", place.hash);
    }
    place.fromUrl = false;
    place.selected = -1;
    decorate();
    if (page === 0 || fromUrl || place.count === undefined) loadCount(s.query);
    renderChips();
    // A reload (or Back after one): the list scrolled where it was when a call was opened from it.
    if (fromUrl && here && history.state && typeof history.state.scroll === "number") {
      place.scroll = history.state.scroll;
      place.opened = history.state.opened || null;
      restorePlace(place.scroll, place.opened);
    }
  }

  let countSeq = 0;
  async function loadCount(q) {
    const mine = ++countSeq;
    $("results-count").textContent = "";
    try {
      const data = await api("GET", "/api/v1/calls/count?" + new URLSearchParams(q).toString());
      if (mine !== countSeq) return;
      place.count = data.count;
      renderCount();
    } catch (e) {
      if (mine === countSeq) C.reportError(e);
    }
  }
  function renderCount() {
    if (place.count === undefined) return;
    $("results-count").textContent = t("search.total", { n: C.fmtNumber(place.count, 0) });
  }

  // ---- chips for the active filters -----------------------------------------------------------------------
  function chipValue(key, value) {
    if (key === "from" || key === "to") return C.fmtTime(value);
    if (key === "consent") return t("consent." + value);
    if (key === "direction") return t("direction." + value);
    if (key === "recording") return t("rec." + value);
    if (key === "recorded") return value === "true" ? t("f.yes") : t("f.no");
    return value;
  }

  function renderChips() {
    const list = $("chips");
    clear(list);
    const q = C.state.search.query;
    if (!q) return;
    for (const [key, value] of q) {
      if (!LABELS[key]) continue;
      const label = t(LABELS[key]) + ": " + chipValue(key, value);
      const remove = el("button", { type: "button", class: "chip-remove", "aria-label": t("search.chip_remove", { what: label }),
                                    dataset: { key, value } }, "×");
      list.append(el("li", { class: "chip" }, el("span", {}, label), remove));
    }
  }

  function removeFilter(key, value) {
    const f = $("search-form");
    if (key === "tag") {
      f.elements.tag.value = f.elements.tag.value.split(",").map((x) => x.trim()).filter((x) => x && x !== value).join(", ");
    } else if (f.elements[key]) f.elements[key].value = "";
    C.runSearch(0);
  }

  // ---- date presets: local days, as the list shows them ---------------------------------------------------
  function presetRange(name) {
    const now = new Date();
    const midnight = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const day = (d, n) => new Date(d.getFullYear(), d.getMonth(), d.getDate() + n);
    if (name === "today") return [midnight, day(midnight, 1)];
    if (name === "yesterday") return [day(midnight, -1), midnight];
    if (name === "7d") return [day(midnight, -6), day(midnight, 1)];
    if (name === "month") return [new Date(now.getFullYear(), now.getMonth(), 1), day(midnight, 1)];
    return [null, null];
  }

  function applyPreset(name) {
    const [from, to] = presetRange(name);
    const f = $("search-form");
    f.elements.from.value = from ? localValue(from.toISOString()) : "";
    f.elements.to.value = to ? localValue(to.toISOString()) : "";
    C.runSearch(0);
  }

  // ---- the filter bar ---------------------------------------------------------------------------------------
  function toggleFilters(open) {
    const more = $("filter-more"), button = $("filters-toggle");
    const show = open === undefined ? more.hidden : open;
    more.hidden = !show;
    button.setAttribute("aria-expanded", show ? "true" : "false");
    button.textContent = t(show ? "search.fewer" : "search.more");
  }

  // ---- rows: agent names, whole-row click, keys ------------------------------------------------------------
  function rows() { return [...document.querySelectorAll("#results-body tr[data-call-id]")]; }

  function decorate() {
    for (const tr of rows()) tr.classList.add("clickable");
    select(place.selected, false);
  }

  function open(tr) {
    remember(tr.dataset.callId);
    location.hash = "#/call/" + tr.dataset.callId;
  }

  function onRowClick(event) {
    const tr = event.target.closest("tr[data-call-id]");
    if (!tr) return;
    if (event.target.closest("a, button")) {
      // A link in the row: it navigates itself; remember where the list was.
      remember(tr.dataset.callId);
      return;
    }
    if (window.getSelection && String(window.getSelection())) return;  // selecting text, not opening
    open(tr);
  }

  function select(index, focus) {
    const all = rows();
    for (const tr of all) tr.classList.remove("selected");
    if (index < 0 || !all.length) return;
    place.selected = Math.min(index, all.length - 1);
    const tr = all[place.selected];
    tr.classList.add("selected");
    if (focus) {
      const link = tr.querySelector("a");
      if (link) link.focus();
      tr.scrollIntoView({ block: "nearest" });
    }
  }

  function onKey(event) {
    if (document.body.dataset.view !== "view-search" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("input, select, textarea, [contenteditable]")) return;
    if (event.key === "/") {
      event.preventDefault();
      $("f-number").focus();
      $("f-number").select();
    } else if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      const all = rows();
      if (!all.length) return;
      const at = place.selected < 0 ? (event.key === "j" ? 0 : all.length - 1)
        : place.selected + (event.key === "j" ? 1 : -1);
      select(Math.max(0, Math.min(all.length - 1, at)), true);
    } else if (event.key === "Enter" && target.closest("#results-body a")) {
      const tr = target.closest("tr[data-call-id]");
      remember(tr ? tr.dataset.callId : null);
    } else if (event.key === "Enter" && place.selected >= 0 && !target.closest("a, button")) {
      const tr = rows()[place.selected];
      if (tr) { event.preventDefault(); open(tr); }
    }
  }

  // ---- saved searches -------------------------------------------------------------------------------------
  async function loadSaved() {
    if (!C.may(C.SEARCH_ROLES)) return;
    try {
      place.saved = (await api("GET", "/api/v1/saved-searches")).items;
    } catch (e) {
      C.reportError(e);
      return;
    }
    renderSaved();
  }

  function renderSaved(selectId) {
    const list = $("saved-list");
    const keep = selectId !== undefined ? String(selectId) : list.value;
    while (list.options.length > 1) list.remove(1);
    list.options[0].textContent = t("saved.choose");
    for (const s of place.saved) list.add(new Option(s.name, String(s.id)));
    list.value = place.saved.some((s) => String(s.id) === keep) ? keep : "";
    $("saved-delete").disabled = !list.value;
  }

  function onSavedChosen() {
    const chosen = place.saved.find((s) => String(s.id) === $("saved-list").value);
    $("saved-delete").disabled = !chosen;
    if (chosen) location.hash = "#/search" + (chosen.query ? "?" + chosen.query : "");
  }

  async function onSave(event) {
    event.preventDefault();
    const name = $("saved-name").value.trim();
    if (!name) return;
    const q = C.state.search.query ? queryString(C.state.search.query) : queryString(C.searchQuery());
    try {
      const row = await api("POST", "/api/v1/saved-searches", { name, query: q });
      place.saved.push(row);
      place.saved.sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
      renderSaved(row.id);
      $("saved-form").hidden = true;
      $("saved-new").hidden = false;
      C.status(t("saved.saved", { name }));
    } catch (e) {
      C.reportError(e);
    }
  }

  async function onDeleteSaved() {
    const id = $("saved-list").value;
    const chosen = place.saved.find((s) => String(s.id) === id);
    if (!chosen) return;
    try {
      await api("DELETE", "/api/v1/saved-searches/" + encodeURIComponent(id));
      place.saved = place.saved.filter((s) => s !== chosen);
      renderSaved("");
      C.status(t("saved.deleted", { name: chosen.name }));
    } catch (e) {
      C.reportError(e);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------------------------
  function start() {
    C.hooks.routes.push(onRoute);
    C.hooks.rendered.push(onRendered);
    C.hooks.rerender.push((view) => {
      if (view === "view-search") { renderChips(); renderCount(); decorate(); renderSaved(); toggleFilters(!$("filter-more").hidden); }
    });
    C.hooks.reset.push(() => { place.saved = []; place.count = undefined; place.scroll = 0; place.opened = null; loadSaved(); });
    for (const b of document.querySelectorAll("#view-search .preset")) {
      b.addEventListener("click", () => applyPreset(b.dataset.preset));
    }
    $("filters-toggle").addEventListener("click", () => toggleFilters());
    $("chips").addEventListener("click", (e) => {
      const b = e.target.closest(".chip-remove");
      if (b) removeFilter(b.dataset.key, b.dataset.value);
    });
    $("results-body").addEventListener("click", onRowClick);
    document.addEventListener("keydown", onKey);
    // The export links follow what is on screen: every change of a field, not only the last search.
    const form = $("search-form");
    for (const type of ["input", "change"]) form.addEventListener(type, () => C.updateExportLinks(C.searchQuery()));
    // A choice in a list filter is a search of its own (one action, not two).
    for (const name of ["direction", "consent", "recorded", "recording", "order", "limit"]) {
      form.elements[name].addEventListener("change", () => C.runSearch(0));
    }
    // "Back to results" returns to this search, its page and its place.
    $("call-back").addEventListener("click", (e) => {
      if (place.hash !== "#/search") { e.preventDefault(); location.hash = place.hash; }
    });
    $("saved-list").addEventListener("change", onSavedChosen);
    $("saved-new").addEventListener("click", () => {
      $("saved-form").hidden = false;
      $("saved-new").hidden = true;
      $("saved-name").focus();
    });
    $("saved-cancel").addEventListener("click", () => { $("saved-form").hidden = true; $("saved-new").hidden = false; });
    $("saved-form").addEventListener("submit", onSave);
    $("saved-delete").addEventListener("click", onDeleteSaved);
    C.hooks.ready.push(() => { if (C.state.me) loadSaved(); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
