/* callrec console: errors in the user's language, the in-page dialog (no window.prompt/confirm), the audit
 * trail in words, the time zone, and table cells labelled for the phone layout (issue 13).
 */
"use strict";
window.CallrecUx = function (ctx) {
  const { $, t, el, clear, fmtTime, text } = ctx;

  // ---- errors in the user's language --------------------------------------------------------------------
  // The API answers in English, for admins and logs.  The page shows its own words: known messages by
  // key, a bad parameter by the field's name, anything else by what its status means.
  const KNOWN = {
    "the recording of this call was deleted": "err.api.audio_deleted",
    "this call has no recording": "err.api.no_recording",
    "the recording file is missing": "err.api.file_missing",
    "the recording file is missing or unreadable": "err.api.file_missing",
    "the recording was already deleted": "err.api.already_deleted",
    "the call is under legal hold": "err.api.held",
    "the call is still going on": "err.api.open",
    "this call has no recording to delete": "err.api.no_recording",
    "the call has no such tag": "err.api.no_tag",
    "you already have an export running; wait for it to finish": "err.api.export_running",
    "too many exports running; try again later": "err.api.exports_busy",
    "recording control unavailable": "err.api.control",
    "no signing key configured on the server (integrity.signing_key)": "err.api.no_signing_key",
  };
  const BY_STATUS = { 0: "err.network", 403: "err.forbidden", 404: "err.not_found", 408: "err.timeout",
                      409: "err.conflict", 413: "err.too_large", 415: "err.generic", 429: "err.throttled",
                      503: "err.unavailable" };

  function localize(e) {
    if (!e) return "";
    if (e.status === 0) return t("err.network");
    const message = typeof e.message === "string" ? e.message : "";
    if (KNOWN[message]) return t(KNOWN[message]);
    if (e.status === 400) {
      const m = message.match(/^([a-z_]{1,40}): /);
      if (m) return t("err.bad_field", { field: t("field." + m[1]) === "field." + m[1] ? m[1] : t("field." + m[1]) });
      return t("err.bad_input");
    }
    if (e.status >= 500) return t("err.server", { status: e.status });
    return t(BY_STATUS[e.status] || "err.generic", { status: e.status });
  }

  // ---- the dialog -----------------------------------------------------------------------------------
  // One <dialog> for questions: a reason to type (legal hold) or a yes/no (delete).  Resolves to the text
  // (or true), or null when cancelled.
  function ask({ title, body, label, ok, required, danger }) {
    const dlg = $("dlg"), input = $("dlg-input");
    $("dlg-title").textContent = title;
    $("dlg-text").textContent = body || "";
    $("dlg-field").hidden = !label;
    $("dlg-label").textContent = label || "";
    input.value = "";
    input.required = !!required;
    $("dlg-ok").textContent = ok;
    $("dlg-ok").classList.toggle("danger", !!danger);
    return new Promise((resolve) => {
      const done = (value) => {
        $("dlg-form").removeEventListener("submit", onSubmit);
        $("dlg-cancel").removeEventListener("click", onCancel);
        dlg.removeEventListener("cancel", onCancel);
        if (dlg.open) dlg.close();
        resolve(value);
      };
      const onSubmit = (event) => {
        event.preventDefault();
        if (label) {
          const v = input.value.trim();
          if (required && !v) { input.focus(); return; }
          done(v);
        } else done(true);
      };
      const onCancel = (event) => { event.preventDefault(); done(null); };
      $("dlg-form").addEventListener("submit", onSubmit);
      $("dlg-cancel").addEventListener("click", onCancel);
      dlg.addEventListener("cancel", onCancel);
      dlg.showModal();
      (label ? input : $("dlg-ok")).focus();
    });
  }

  // ---- the audit trail in words -------------------------------------------------------------------------
  function between(call) {
    if (!call) return t("unknown");
    const caller = call.caller_name ? call.caller_name + " <" + (call.caller_number || "") + ">" : text(call.caller_number);
    return call.agent ? t("audit.between_text", { caller, agent: call.agent }) : caller;
  }

  function bytesOf(range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range || "");
    return m ? t("audit.d.range", { from: m[1] || "0", to: m[2] || t("audit.d.end") }) : String(range);
  }

  function value(v) {
    if (v === null || v === undefined || v === "") return t("unknown");
    if (typeof v === "boolean") return v ? t("yes") : t("no");
    if (Array.isArray(v)) return v.map(value).join(", ");
    if (typeof v === "object") return Object.entries(v).map(([k, x]) => k + " " + value(x)).join(", ");
    return String(v);
  }

  // "range: bytes=0-" → "from byte 0"; known keys in words, others as "key: value" (never raw JSON).
  function details(action, d) {
    if (!d || !Object.keys(d).length) return "";
    const parts = [];
    for (const [k, v] of Object.entries(d)) {
      if (k === "range") { if (v) parts.push(bytesOf(v)); continue; }
      const label = t("audit.k." + k);
      parts.push((label === "audit.k." + k ? k : label) + ": " + value(v));
    }
    return parts.join("; ");
  }

  // ---- the phone layout ---------------------------------------------------------------------------------
  // Under ~600 px a table row is a card: each cell shows its column's name (CSS reads data-label).  Cells
  // are labelled from the header whenever a table body changes, whichever code filled it.
  function labelCells(table) {
    const heads = Array.from(table.querySelectorAll("thead th")).map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll("tbody tr")) {
      Array.from(row.children).forEach((cell, i) => {
        if (cell.colSpan > 1) cell.removeAttribute("data-label");
        else if (heads[i]) cell.dataset.label = heads[i];
      });
    }
  }

  function watchTables() {
    const observer = new MutationObserver((changes) => {
      const tables = new Set();
      for (const c of changes) {
        const table = c.target.closest && c.target.closest("table.grid");
        if (table) tables.add(table);
      }
      tables.forEach(labelCells);
    });
    for (const table of document.querySelectorAll("table.grid")) {
      observer.observe(table, { childList: true, subtree: true, characterData: true });
      labelCells(table);
    }
  }

  function timeZone() {
    let zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    const minutes = -new Date().getTimezoneOffset();
    const sign = minutes < 0 ? "−" : "+", a = Math.abs(minutes);
    const offset = "UTC" + sign + String(Math.floor(a / 60)).padStart(2, "0") + ":" + String(a % 60).padStart(2, "0");
    $("tz").textContent = t("tz.shown", { zone: zone || offset, offset });
  }

  return { localize, ask, between, details, watchTables, timeZone, labelCells };
};
