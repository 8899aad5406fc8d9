/* callrec console: signed evidence exports (GET /api/v1/calls/export/evidence) of the calls on screen or of one
 * call, with or without their transcripts.  A restricted action, set apart like the others, for the roles that
 * may take audio out (the API's calls.audio); the API audits each call exported and the export itself.
 *
 * The zip is fetched, not linked: an error (no signing key, too much audio, too many exports at once) is then
 * said in the user's language instead of arriving as a downloaded file.
 */
"use strict";
(function () {
  const C = window.CALLREC_CONSOLE;
  const { $, t } = C;
  const EVIDENCE_ROLES = ["admin", "supervisor", "agent", "security"];

  // Exactly the page of results on screen: the search's filters, order, page size and the page's cursor.
  function pageQuery() {
    const s = C.state.search;
    const q = new URLSearchParams(s.query || C.searchQuery());
    q.set("limit", $("search-form").elements.limit.value);
    const cursor = s.page > 0 ? s.cursors[s.page] : null;
    if (cursor) q.set("cursor", cursor);
    return q;
  }

  function callQuery() {
    const q = new URLSearchParams();
    q.set("call", C.state.call.id);
    return q;
  }

  async function download(button, q, transcripts) {
    if (transcripts) q.set("transcripts", "true");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    C.showError("");
    C.status(t("evidence.working"));
    try {
      const resp = await fetch("/api/v1/calls/export/evidence?" + q.toString(),
                               { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) {
        // The API's JSON error, said through the console's error mapping (as api() does).
        let message = "";
        try { message = (await resp.json()).error || ""; } catch (e) { message = ""; }
        if (resp.status === 401) C.sessionEnded();
        throw Object.assign(new Error(message), { status: resp.status });
      }
      const blob = await resp.blob();
      const name = (/filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "") || [])[1] || "evidence.zip";
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      C.status(t("evidence.done", { name }));
    } catch (e) {
      C.status("");
      C.reportError(e);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  function renderList() {
    const s = C.state.search;
    const shown = !!(s.data && s.data.items && s.data.items.length);
    $("evidence-list").hidden = !C.may(EVIDENCE_ROLES) || !shown;
  }

  function renderCall() {
    const c = C.state.call.data;
    $("evidence-box").hidden = !C.may(EVIDENCE_ROLES) || !c;
  }

  function start() {
    C.hooks.rendered.push(renderList);
    C.hooks.callRendered.push(renderCall);
    C.hooks.rerender.push((view) => { if (view === "view-search") renderList(); else if (view === "view-call") renderCall(); });
    $("evidence-page").addEventListener("click", (e) => download(e.currentTarget, pageQuery(), $("evidence-page-tr").checked));
    $("evidence-call").addEventListener("click", (e) => download(e.currentTarget, callQuery(), $("evidence-call-tr").checked));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
