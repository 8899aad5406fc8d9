/* callrec console: the call page's player (issue 13).
 *
 * A small canvas renderer over server-computed peaks (GET /api/v1/calls/{id}/waveform: stereo keeps the
 * caller above the line and the agent below), the call's timeline drawn on the same bar
 * (GET /api/v1/calls/{id}/timeline: the whole call from its start, the recording placed where it began,
 * so the notice, the consent and anything before the recording show too, and a call without audio still
 * has its bar), ±10 s, a visible speed control, keys (Space, → +5 s, ← −5 s), a start moment from a
 * link (#/call/<id>?t=<seconds>), and the events with millisecond times in a table.  Who viewed and
 * listened (GET /api/v1/calls/{id}/readers) sits below for supervisors and up.
 *
 * Nothing is fetched from the recording before the user plays (preload="none"): a t= link sets where
 * playing starts; it does not play by itself.  Text reaches the page through textContent only.
 */
"use strict";
window.CallrecPlayer = function (ctx) {
  const { $, t, el, clear, api, may, fmtTime, fmtDuration, state, text } = ctx;
  const READER_ROLES = ["admin", "supervisor", "security", "auditor"];
  const STEP_KEY_S = 5, STEP_BUTTON_S = 10;
  let tl = null, wave = null, loadedFor = null;

  const audio = () => $("player");

  function fmtMs(ms) {  // m:ss.mmm, for the evidence table
    if (ms === null || ms === undefined) return t("unknown");
    const neg = ms < 0;
    const v = Math.abs(Math.round(ms)), s = Math.floor(v / 1000);
    return (neg ? "−" : "") + Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0") + "." +
      String(v % 1000).padStart(3, "0");
  }
  function fmtSec(s) { return fmtDuration(Math.floor(Math.max(0, s))); }

  function recording() { return (tl && tl.recording) || {}; }
  function offsetMs() { return recording().offset_ms || 0; }
  function audioDurationMs() {
    const p = audio();
    if (p.readyState >= 1 && isFinite(p.duration)) return p.duration * 1000;
    if (recording().duration_ms !== null && recording().duration_ms !== undefined) return recording().duration_ms;
    return wave ? wave.duration_ms : 0;
  }
  // The bar spans the call: from its start to the hang-up (or the recording's end, if later).
  function spanMs() {
    if (!tl) return 1;
    const events = tl.events || [];
    const last = events.length ? events[events.length - 1].call_ms : 0;
    const recEnd = recording().available ? offsetMs() + audioDurationMs() : 0;
    return Math.max(tl.duration_ms || 0, recEnd, last, 1);
  }
  // The audio source is set with the call's detail, before the timeline arrives: the keys work at once.
  function playable() { return !!audio().getAttribute("src"); }

  // ---- loading --------------------------------------------------------------------------------------
  async function open(call) {
    const id = call.id;
    tl = null; wave = null; loadedFor = id;
    clear($("wave-markers"));
    $("timeline-box").hidden = true;
    $("readers-box").hidden = true;
    draw();
    try {
      const data = await api("GET", "/api/v1/calls/" + encodeURIComponent(id) + "/timeline");
      if (loadedFor !== id) return;
      tl = data;
    } catch (e) {
      if (loadedFor === id) ctx.reportError(e);
      return;
    }
    render();
    loadReaders();
    const rec = call.recording || {};
    if (rec.available && may(ctx.AUDIO_ROLES)) {
      try {
        const data = await api("GET", "/api/v1/calls/" + encodeURIComponent(id) + "/waveform");
        if (loadedFor !== id) return;
        wave = data;
      } catch (e) {
        // No peaks (a file gone missing): the bar still shows the timeline; the player says the rest.
        if (loadedFor === id && e.status !== 404) ctx.reportError(e);
      }
      draw();
      legend();
    }
  }

  async function loadReaders() {
    const id = loadedFor;
    if (!id || !may(READER_ROLES)) { $("readers-box").hidden = true; return; }
    try {
      const data = await api("GET", "/api/v1/calls/" + encodeURIComponent(id) + "/readers");
      if (loadedFor !== id) return;
      renderReaders(data.items || []);
    } catch (e) {
      if (loadedFor === id) ctx.reportError(e);
    }
  }

  function renderReaders(items) {
    $("readers-box").hidden = false;
    const body = $("readers-body");
    clear(body);
    for (const r of items) {
      body.append(el("tr", { dataset: { action: r.action, actor: r.actor } },
        el("td", {}, text(r.actor)),
        el("td", {}, r.role ? t("role." + r.role) : t("unknown")),
        el("td", {}, t("rd.action." + r.action)),
        el("td", { class: "num" }, String(r.times)),
        el("td", {}, fmtTime(r.last_at))));
    }
    if (!items.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, t("rd.none"))));
    ctx.readers = items;
  }

  // ---- the page ---------------------------------------------------------------------------------------
  function render() {
    if (!tl) return;
    badges();
    markers();
    table();
    legend();
    draw();
    updateTime();
    $("pl-controls").hidden = !playable();
    $("pl-keys").hidden = !playable();
  }

  function badges() {
    const box = $("call-badges"), c = state.call.data || {};
    clear(box);
    const consent = tl.consent;
    const good = consent === "implied" || consent === "granted";
    box.append(el("span", { class: "badge " + (good ? "ok" : consent ? "warn" : ""), id: "badge-consent" },
      consent ? t("badge.consent." + consent) : t("badge.consent.none")));
    const rec = recording();
    let key = "badge.rec." + (rec.status || "none");
    if (rec.deleted_at) key = "badge.rec.deleted";
    const vars = { duration: fmtSec(audioDurationMs() / 1000) };
    box.append(el("span", { class: "badge " + (rec.available ? "ok" : "warn"), id: "badge-recording" }, t(key, vars)));
    if (c.consent_mode) box.append(el("span", { class: "badge" }, t("badge.mode", { mode: t("mode." + c.consent_mode) })));
  }

  function legend() {
    const box = $("wave-legend");
    clear(box);
    if (!wave) { box.textContent = tl ? t("pl.legend_timeline") : ""; return; }
    if (wave.channels === 2) {
      box.append(el("span", { class: "swatch caller" }), " ", t("pl.legend_caller"), "  ",
                 el("span", { class: "swatch agent" }), " ", t("pl.legend_agent"));
    } else {
      box.append(el("span", { class: "swatch caller" }), " ", t("pl.legend_mono"));
    }
  }

  function eventLabel(e) {
    const d = e.detail || {};
    const who = d.name ? d.name + (d.number ? " <" + d.number + ">" : "") : text(d.number);
    switch (e.kind) {
      case "call_start": return t("tl.ev.call_start", { direction: d.direction ? t("direction." + d.direction) : "" });
      case "notice_end": return t(d.completed === false ? "tl.ev.notice_cut" : "tl.ev.notice_end");
      case "key": return t("tl.ev.key", { key: d.key });
      case "keys": return t("tl.ev.keys", { keys: d.keys });
      case "consent": return t("tl.ev.consent." + d.consent, { key: d.key || t("unknown") });
      case "pause": case "resume":
        return t("tl.ev." + e.kind, { by: text(d.by), source: d.source ? t("tl.source." + d.source) : t("unknown") });
      case "party_joined": case "party_left":
        return t("tl.ev." + e.kind, { role: t("party." + d.role), who });
      case "transfer": return t("tl.ev.transfer", { who });
      case "hangup": return t("tl.ev.hangup", { cause: d.cause_text || (d.cause !== undefined ? String(d.cause) : t("unknown")) });
      default: return t("tl.ev." + e.kind);
    }
  }

  function table() {
    const body = $("timeline-body");
    clear(body);
    $("timeline-box").hidden = false;
    for (const e of tl.events || []) {
      let audioCell = t("unknown");
      if (e.audio_ms !== null && e.audio_ms !== undefined && playable()) {
        audioCell = el("button", { type: "button", class: "turn-time",
                                   "aria-label": t("tr.play_from", { time: fmtMs(e.audio_ms) }) }, fmtMs(e.audio_ms));
        audioCell.addEventListener("click", () => ctx.seekTo(e.audio_ms));
      } else if (e.audio_ms !== null && e.audio_ms !== undefined) {
        audioCell = fmtMs(e.audio_ms);
      }
      body.append(el("tr", { dataset: { kind: e.kind, callMs: e.call_ms } },
        el("td", { class: "num mono" }, fmtMs(e.call_ms)),
        el("td", { class: "num mono" }, audioCell),
        el("td", {}, eventLabel(e)),
        el("td", {}, fmtTime(e.at))));
    }
  }

  function markers() {
    const box = $("wave-markers");
    clear(box);
    const span = spanMs();
    for (const e of tl.events || []) {
      if (e.kind === "call_start") continue;
      const pct = Math.min(100, Math.max(0, e.call_ms / span * 100));
      const m = el("div", { class: "marker k-" + e.kind, title: fmtMs(e.call_ms) + " " + eventLabel(e),
                            dataset: { kind: e.kind, callMs: e.call_ms } });
      m.style.left = pct + "%";
      box.append(m);
    }
  }

  // ---- the canvas -------------------------------------------------------------------------------------
  function draw() {
    const canvas = $("wave");
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio)), h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#ffffff";
    g.fillRect(0, 0, w, h);
    if (!tl) { delete canvas.dataset.spanMs; return; }
    const span = spanMs(), x = (ms) => ms / span * w;
    canvas.dataset.spanMs = String(span);  // the bar's length in ms, for tests and tools
    const events = tl.events || [];
    const at = (kind) => { const e = events.find((v) => v.kind === kind); return e ? e.call_ms : null; };
    const ns = at("notice_start"), ne = at("notice_end");
    if (ns !== null) { g.fillStyle = "#fff1e6"; g.fillRect(x(ns), 0, Math.max(1, x(ne === null ? ns : ne) - x(ns)), h); }
    const rec = recording();
    if (rec.available) {
      g.fillStyle = "#eef4fb";
      g.fillRect(x(offsetMs()), 0, Math.max(1, x(offsetMs() + audioDurationMs()) - x(offsetMs())), h);
    }
    // Paused stretches: nothing was recorded there.
    let pausedAt = null;
    for (const e of events) {
      if (e.kind === "pause") pausedAt = e.call_ms;
      if (e.kind === "resume" && pausedAt !== null) {
        g.fillStyle = "#d5dae0";
        g.fillRect(x(pausedAt), 0, Math.max(1, x(e.call_ms) - x(pausedAt)), h);
        pausedAt = null;
      }
    }
    const mid = h / 2;
    if (wave && wave.peaks && wave.peaks.length) {
      let max = 1;
      for (const ch of wave.peaks) for (const v of ch) if (v > max) max = v;
      const half = mid - 3 * ratio;
      const colours = ["#0b5cad", "#2f7d32"];
      wave.peaks.forEach((ch, c) => {
        g.fillStyle = colours[c] || colours[0];
        for (let i = 0; i < ch.length; i++) {
          const x0 = x(offsetMs() + i * wave.bucket_ms), x1 = x(offsetMs() + (i + 1) * wave.bucket_ms);
          const len = ch[i] / max * half;
          if (wave.channels === 2) g.fillRect(x0, c === 0 ? mid - len : mid, Math.max(1, x1 - x0), len);
          else g.fillRect(x0, mid - len, Math.max(1, x1 - x0), 2 * len);
        }
      });
    }
    g.fillStyle = "#5a6270";
    g.fillRect(0, mid, w, Math.max(1, ratio));
    head();
  }

  function head() {
    const h = $("wave-head");
    const p = audio();
    const show = !!tl && recording().available && playable();
    h.hidden = !show;
    if (!show) return;
    const cur = p.readyState >= 1 ? p.currentTime * 1000 : (state.call.seekMs || 0);
    h.style.left = Math.min(100, (offsetMs() + cur) / spanMs() * 100) + "%";
  }

  function updateTime() {
    const p = audio();
    const cur = p.readyState >= 1 ? p.currentTime : (state.call.seekMs || 0) / 1000;
    $("pl-time").textContent = fmtSec(cur) + " / " + fmtSec(audioDurationMs() / 1000);
    $("pl-play").textContent = p.paused ? t("pl.play") : t("pl.pause");
    head();
  }

  // ---- control ----------------------------------------------------------------------------------------
  function toggle() {
    const p = audio();
    if (!playable()) return;
    if (p.paused) p.play().catch(() => { /* refused: the user presses play again */ });
    else p.pause();
  }

  function moveBy(seconds) {
    const p = audio();
    if (!playable()) return;
    const dur = audioDurationMs() / 1000;
    if (p.readyState >= 1) {
      p.currentTime = Math.min(Math.max(0, p.currentTime + seconds), dur || p.currentTime + seconds);
    } else {
      // Not loaded yet (nothing is before play): move where playing will start.
      state.call.seekMs = Math.min(Math.max(0, (state.call.seekMs || 0) + seconds * 1000), dur * 1000);
    }
    updateTime();
  }

  // Where a t= link or a marker says to start: kept until the audio is loaded (onPlayerMetadata).
  function startAt(ms) {
    const p = audio();
    if (!playable()) return;
    if (p.readyState >= 1) p.currentTime = ms / 1000;
    else state.call.seekMs = ms;
    updateTime();
  }

  function onCanvasClick(event) {
    if (!playable()) return;
    const r = $("wave").getBoundingClientRect();
    const callMs = (event.clientX - r.left) / r.width * spanMs();
    const ms = callMs - offsetMs();
    if (ms >= 0 && ms <= audioDurationMs()) ctx.seekTo(ms);
  }

  function isTyping(target) {
    const tag = (target && target.tagName) || "";
    return ["INPUT", "SELECT", "TEXTAREA"].includes(tag) || (target && target.isContentEditable);
  }

  function onKey(event) {
    if (document.body.dataset.view !== "view-call" || !playable()) return;
    if (event.altKey || event.ctrlKey || event.metaKey || $("dlg").open || isTyping(event.target)) return;
    const onButton = ["BUTTON", "A", "SUMMARY"].includes((event.target && event.target.tagName) || "");
    if (event.key === " " && !onButton) { event.preventDefault(); toggle(); }
    else if (event.key === "ArrowRight") { event.preventDefault(); moveBy(STEP_KEY_S); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); moveBy(-STEP_KEY_S); }
  }

  function stop() {
    loadedFor = null; tl = null; wave = null;
    clear($("wave-markers"));
    clear($("call-badges"));
    $("timeline-box").hidden = true;
    $("readers-box").hidden = true;
    draw();
  }

  function install() {
    const p = audio();
    $("pl-play").addEventListener("click", toggle);
    $("pl-back").addEventListener("click", () => moveBy(-STEP_BUTTON_S));
    $("pl-fwd").addEventListener("click", () => moveBy(STEP_BUTTON_S));
    $("pl-speed").addEventListener("change", () => { p.playbackRate = Number($("pl-speed").value); });
    // A new source resets the rate: the chosen speed stays.
    p.addEventListener("play", () => { p.playbackRate = Number($("pl-speed").value); });
    for (const type of ["timeupdate", "seeked", "loadedmetadata", "play", "pause", "ended", "durationchange"]) {
      p.addEventListener(type, updateTime);
    }
    p.addEventListener("playing", loadReaders);  // the listen just audited is on the list
    $("wave").addEventListener("click", onCanvasClick);
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", () => { if (tl) draw(); });
  }

  return { install, open, stop, render, startAt, updateTime, loadReaders, fmtMs };
};
