// The Muster dashboard. Plain JavaScript, no dependencies: it is served by
// the hub itself under a Content-Security-Policy that allows no inline
// script. Every value from the hub is written with textContent, never as
// markup, so agent output such as <script> shows as text.
"use strict";

const API = "/api/v1";
const $ = (sel) => document.querySelector(sel);

/** Builds an element; string and number children become text nodes. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class HubError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function call(method, path, body) {
  // A request that hangs must not hold up the page's live refreshes for ever.
  const opts = { method, headers: {}, credentials: "same-origin", signal: AbortSignal.timeout(30000) };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, opts);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    if (r.status === 401) showSignIn();
    throw new HubError(r.status, (data && data.detail) || r.statusText);
  }
  return data;
}

// ---- sign in -----------------------------------------------------------------

function showSignIn(message) {
  $("#top").hidden = true;
  $("#view").hidden = true;
  $("#alerts").replaceChildren();
  $("#signin").hidden = false;
  $("#signin-error").textContent = message || "";
  live.stop();
}

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#token").value;
  try {
    const who = await call("POST", "/ui/session", { token });
    $("#token").value = "";
    await start(who.name);
  } catch (e) {
    $("#signin-error").textContent = e.message;
  }
}

async function signOut() {
  try { await call("DELETE", "/ui/session"); } catch (_) { /* signed out either way */ }
  showSignIn("Signed out.");
}

async function start(name) {
  $("#signin").hidden = true;
  $("#top").hidden = false;
  $("#view").hidden = false;
  $("#who").textContent = name;
  // The socket sends what happens from now on; each view reads its own past.
  const s = await call("GET", "/status");
  live.start(s.last_event);
  refreshAlerts();
  route();
}

// ---- the live stream -----------------------------------------------------------

const live = {
  socket: null, last: 0, retry: 500, running: false, following: null,
  start(after) {
    this.running = true;
    this.last = after;
    this.connect();
  },
  stop() {
    this.running = false;
    if (this.socket) this.socket.close();
    this.socket = null;
  },
  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const s = new WebSocket(`${scheme}://${location.host}${API}/events/live?after=${this.last}`);
    this.socket = s;
    setConn("connecting");
    s.onopen = () => {
      this.retry = 500;
      setConn("live");
      if (this.following) s.send(JSON.stringify(this.following));
      // Points taken while the socket was down come from the window itself.
      if (metricsWindow) reloadMetrics();
    };
    s.onmessage = (m) => {
      if (s !== this.socket) return;
      const msg = JSON.parse(m.data);
      if (msg.type === "events") {
        for (const e of msg.events) this.last = Math.max(this.last, e.seq);
        onEvents(msg.events);
      } else if (msg.type === "output") {
        onOutput(msg.task, msg.chunks);
      } else if (msg.type === "metrics") {
        onMetrics(msg.points);
      }
    };
    s.onclose = () => {
      // A socket replaced by a newer one (a sign-in after a sign-out) is done with.
      if (!this.running || s !== this.socket) return;
      setConn("reconnecting");
      // Catch up from the last event seen once back. A hub that restarted has
      // forgotten the session: asking first shows the sign-in form (call()
      // does on a 401) instead of retrying for ever.
      setTimeout(async () => {
        if (!this.running) return;
        try { await call("GET", "/ui/session"); } catch (e) { if (e.status === 401) return; }
        if (this.running) this.connect();
      }, this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  },
  follow(task, after) {
    this.following = task ? { follow: task, after: after || 0 } : { follow: null };
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(this.following));
  },
};

function setConn(state) {
  const c = $("#conn");
  c.textContent = state;
  c.className = "conn " + (state === "live" ? "live" : state === "reconnecting" ? "down" : "");
}

/** The latest step of each running task, from `task.step` events, for the agent cards. */
const liveSteps = new Map();
const ENDED = new Set(["task.succeeded", "task.failed", "task.cancelled", "task.skipped"]);

function noteStep(e) {
  if (!e.task) return;
  if (e.kind === "task.step" && e.detail) {
    liveSteps.delete(e.task);
    liveSteps.set(e.task, e.detail);
    if (liveSteps.size > 5000) liveSteps.delete(liveSteps.keys().next().value);
  } else if (ENDED.has(e.kind)) {
    liveSteps.delete(e.task);
  }
}

// Live updates are batched: whatever arrives within a few hundred
// milliseconds is handed to the view at once, and a view never refreshes
// while its previous refresh is still running.
const batch = { events: [], timer: null, busy: false };

function onEvents(events) {
  for (const e of events) noteStep(e);
  if (timeline) timeline.arrived(events);
  batch.events.push(...events);
  scheduleRefresh();
}

function scheduleRefresh() {
  if (batch.timer || batch.busy) return;
  batch.timer = setTimeout(flushRefresh, 300);
}

async function flushRefresh() {
  batch.timer = null;
  // A view still loading keeps the batch; route() hands it over once the view is in place.
  if (current.loading) return;
  const events = batch.events;
  batch.events = [];
  batch.busy = true;
  try {
    if (events.some((e) => e.kind.startsWith("alert."))) await refreshAlerts();
    if (current.refresh) await current.refresh(events);
  } catch (e) {
    if (e.status !== 401) console.warn("refresh failed", e);
  } finally {
    batch.busy = false;
    if (batch.events.length) scheduleRefresh();
  }
}

function onOutput(task, chunks) {
  const log = $("#task-log");
  if (!log || log.dataset.task !== task) return;
  // Follow the tail only when the reader is already at the bottom.
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  for (const c of chunks) log.append(document.createTextNode(c.data));
  // A reconnect asks for what came after the last chunk shown, not all of it again.
  if (chunks.length && live.following && live.following.follow === task) {
    live.following.after = Math.max(live.following.after, chunks[chunks.length - 1].seq);
  }
  if (atEnd) log.scrollTop = log.scrollHeight;
}

function eventRow(e) {
  return el("tr", {},
    el("td", { class: "muted nowrap" }, e.seq),
    el("td", { class: "muted nowrap" }, e.at.replace("T", " ").replace("Z", "")),
    el("td", {}, e.kind),
    el("td", {}, e.task ? el("a", { href: `#/tasks/${e.task}` }, e.task) : ""),
    el("td", {}, e.agent || ""),
    el("td", {}, e.detail || ""));
}

// ---- alerts ------------------------------------------------------------------

async function refreshAlerts() {
  let alerts;
  try { alerts = await call("GET", "/alerts"); } catch (_) { return; }
  const firing = alerts.filter((a) => a.state === "firing");
  $("#alerts").replaceChildren(...firing.map((a) => el("div", { class: `alert ${a.severity}`, "data-rule": a.rule },
    el("strong", {}, a.rule), el("span", {}, a.detail || ""),
    el("button", { type: "button", class: "ack", onclick: async () => {
      await call("POST", `/alerts/${encodeURIComponent(a.rule)}/ack`, {});
      refreshAlerts();
    } }, "Acknowledge"))));
}

// ---- views -------------------------------------------------------------------

/** The view on screen: `refresh(events)` brings it up to date after live events. */
let current = { refresh: null };

/** Counts navigations, so that a view still loading when the reader moved on draws nothing. */
let routeGen = 0;

/** A function that fills the page for the view being opened now, and does nothing once another is. */
function stage() {
  const gen = routeGen;
  const show = (...children) => { if (gen === routeGen) replaceKeepingFocus($("#view"), children); };
  show.current = () => gen === routeGen;
  return show;
}

/** Which element has the focus, as a selector that finds its twin in a redrawn page. */
function focusKey() {
  const e = document.activeElement;
  if (!e || e === document.body || !$("#view").contains(e)) return null;
  if (e.id) return `#${CSS.escape(e.id)}`;
  const attrs = ["data-agent", "data-lock", "data-task", "data-decision", "data-setting"];
  const holder = e.closest(attrs.map((a) => `[${a}]`).join(","));
  const cls = typeof e.className === "string" && e.className.split(" ")[0];
  if (!holder || !cls) return null;
  const attr = attrs.find((a) => holder.hasAttribute(a));
  return `[${attr}="${CSS.escape(holder.getAttribute(attr))}"] ${e.tagName.toLowerCase()}.${CSS.escape(cls)}`;
}

/** Replaces a container's children; a keyboard user's focus stays on the same control. */
function replaceKeepingFocus(container, children) {
  const key = focusKey();
  container.replaceChildren(...children);
  if (!key) return;
  const twin = document.querySelector(key);
  if (twin) twin.focus({ preventScroll: true });
}

function card(key, value, id) {
  return el("div", { class: "card" }, el("div", { class: "n", id }, value), el("div", { class: "k" }, key));
}

const today = () => new Date().toISOString().slice(0, 10);

async function overview() {
  const show = stage();
  show(
    el("h1", {}, "Overview"),
    el("p", { id: "health" }, "Health: …"),
    el("div", { class: "cards", id: "numbers" }),
    el("h2", {}, "Latest events"),
    el("table", {}, el("tbody", { id: "latest" })));
  const numbers = async () => {
    const [s, agents, m, costs] = await Promise.all([
      call("GET", "/status"), call("GET", "/agents"), call("GET", "/metrics"), call("GET", "/costs?by=day&since=24h"),
    ]);
    const t = s.tasks || {};
    const online = agents.filter((a) => a.connected).length;
    const reasons = (s.health && s.health.reasons) || [];
    const ended = m.points.reduce((n, p) => n + p.succeeded + p.failed, 0);
    const failed = m.points.reduce((n, p) => n + p.failed, 0);
    const spent = (costs.rows.find((r) => r.key === today()) || { cost_usd: 0 }).cost_usd;
    $("#health").replaceChildren("Health: ", el("strong", { class: `health-${s.health && s.health.level}` }, (s.health && s.health.level) || "?"),
      reasons.length ? el("span", { class: "muted" }, " — ", reasons.join("; ")) : "",
      s.dispatch_paused ? el("span", { class: "error" }, " · dispatch is paused") : "");
    $("#numbers").replaceChildren(
      card("queued", t.queued || 0, "count-queued"), card("running", (t.running || 0) + (t.assigned || 0), "count-running"),
      card("waiting for a person", (t.needs_decision || 0) + (t.pending_approval || 0), "count-waiting"),
      card("agents online", `${online}/${agents.length}`, "count-agents"),
      card("failure rate, last hour", ended ? fmt.pct(failed / ended) : "-", "count-failure-rate"),
      card("cost today (UTC)", fmt.usd(spent), "count-cost"));
  };
  await numbers();
  const page = await call("GET", `/events?before=${live.last + 1}&limit=15`);
  const latest = $("#latest");
  // Events that came over the socket while the page was read are in both: show each once.
  let shown = 0;
  const add = (events) => {
    for (const e of events) {
      if (e.seq <= shown) continue;
      shown = e.seq;
      latest.prepend(eventRow(e));
    }
    while (latest.children.length > 15) latest.lastChild.remove();
  };
  add(page.events);
  return {
    refresh: async (events) => {
      if (latest.isConnected) add(events);
      await numbers();
    },
  };
}

async function agentsView() {
  const show = stage();
  show(el("h1", {}, "Agents"), el("p", { id: "agents-error", class: "error" }),
    el("p", { id: "agents-summary", class: "muted" }),
    el("div", { id: "agents", class: "cards wide" }));
  // The latest step of tasks already running when the page opened.
  // Only recent history is looked at: a step further back than that is stale.
  const known = new Set(liveSteps.keys());
  const steps = await call("GET", `/events?kind=task.step&after=${Math.max(0, live.last - 20000)}&before=${live.last + 1}&limit=500`);
  for (const e of steps.events) if (!known.has(e.task)) noteStep(e);
  const act = (name, what) => el("button", { type: "button", class: `agent-${what}`, onclick: async () => {
    try { await call("POST", `/agents/${encodeURIComponent(name)}/${what}`, {}); await draw(); }
    catch (e) { $("#agents-error").textContent = e.message; }
  } }, what[0].toUpperCase() + what.slice(1));
  const draw = async () => {
    const [agents, running, breakers] = await Promise.all([
      call("GET", "/agents"), call("GET", "/tasks?state=running&limit=1000"), call("GET", "/breakers"),
    ]);
    const byAgent = new Map();
    for (const t of running.tasks) byAgent.set(t.agent, [...(byAgent.get(t.agent) || []), t]);
    const online = agents.filter((a) => a.connected).length;
    $("#agents-summary").textContent = `${agents.length} agents, ${online} online, ${running.tasks.length} runs`;
    replaceKeepingFocus($("#agents"), agents.map((a) => {
      const runs = byAgent.get(a.name) || [];
      const breaker = breakers.find((b) => b.scope === "agent" && b.name === a.name);
      return el("div", { class: "card agent", "data-agent": a.name },
        el("h3", {}, a.name, " ", el("span", { class: `agent-state state-${a.state}` }, a.state)),
        el("p", {}, `slots ${a.used_slots}/${a.slots}`, " · runners ", (a.runners || []).join(", ") || "-"),
        a.capabilities.length ? el("p", { class: "muted" }, "capabilities: ", a.capabilities.join(", ")) : "",
        el("p", { class: a.unavailable.length ? "error" : "muted" }, "doctor: ",
          a.unavailable.length ? a.unavailable.join("; ") : a.connected ? "every runner passed" : "not connected"),
        el("p", { class: breaker && breaker.state !== "closed" ? "error" : "muted" },
          "circuit ", breaker ? `${breaker.state} (${breaker.failures} failures in a row)` : "closed"),
        el("p", { class: "muted" }, "last heartbeat ", a.last_seen_at ? a.last_seen_at.replace("T", " ").replace("Z", "") : "never",
          a.version ? ` · ${a.version}` : ""),
        runs.length ? el("ul", { class: "runs" }, runs.map((t) => el("li", {}, el("a", { href: `#/tasks/${t.id}` }, t.id), " ",
          t.prompt.length > 60 ? t.prompt.slice(0, 59) + "…" : t.prompt,
          liveSteps.has(t.id) ? el("div", { class: "step muted" }, liveSteps.get(t.id)) : ""))) : el("p", { class: "muted" }, "no run"),
        el("div", { class: "row" }, a.paused ? act(a.name, "resume") : act(a.name, "pause"), a.draining ? "" : act(a.name, "drain")));
    }));
    if (!agents.length) $("#agents").replaceChildren(el("p", { class: "muted" }, "No agent is registered. Add one with muster agent add NAME."));
  };
  await draw();
  return { refresh: (events) => (events.some((e) => e.agent || e.kind.startsWith("task.") || e.kind.startsWith("breaker")) ? draw() : null) };
}

/** Which chart the pointer is over, and at which point, so a live redraw keeps the readout. */
let hover = null;

/** A line chart of `series` over `points`, as SVG, with the values under the pointer. */
function chart(title, points, series, format) {
  const W = 560, H = 160, P = 28;
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const values = points.flatMap((p) => series.map((s) => p[s.key]).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1e-9, ...values);
  const x = (i) => P + (points.length <= 1 ? 0 : (i * (W - 2 * P)) / (points.length - 1));
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(svgNs, "line");
    for (const [k, v] of Object.entries({ x1, y1, x2, y2, class: cls })) l.setAttribute(k, v);
    return l;
  };
  svg.append(line(P, H - P, W - P, H - P, "axis"), line(P, P, P, H - P, "axis"));
  const label = document.createElementNS(svgNs, "text");
  label.setAttribute("x", 2); label.setAttribute("y", P - 8); label.setAttribute("class", "tick");
  label.textContent = format(max);
  svg.append(label);
  // The span of time drawn, oldest at the left.
  for (const [i, anchor] of [[0, "start"], [points.length - 1, "end"]]) {
    if (!points[i] || (i > 0 && points.length < 2)) continue;
    const t = document.createElementNS(svgNs, "text");
    t.setAttribute("x", x(i)); t.setAttribute("y", H - P + 14); t.setAttribute("class", "tick");
    t.setAttribute("text-anchor", anchor);
    t.textContent = points[i].at.slice(11, 19);
    svg.append(t);
  }
  for (const s of series) {
    // A line through each run of known values; a gap (no runs, no agents) stays a gap, and a
    // value alone between gaps is a dot.
    const runs = [[]];
    points.forEach((p, i) => {
      const v = p[s.key];
      if (v === null || v === undefined) { if (runs[runs.length - 1].length) runs.push([]); }
      else runs[runs.length - 1].push([x(i), y(v)]);
    });
    for (const run of runs.filter((r) => r.length)) {
      if (run.length === 1) {
        const dot = document.createElementNS(svgNs, "circle");
        for (const [k, v] of Object.entries({ cx: run[0][0], cy: run[0][1], r: 2.5, class: `dot ${s.cls}` })) dot.setAttribute(k, v);
        svg.append(dot);
        continue;
      }
      const path = document.createElementNS(svgNs, "polyline");
      path.setAttribute("points", run.map(([a, b]) => `${a},${b}`).join(" "));
      path.setAttribute("class", `series ${s.cls}`);
      svg.append(path);
    }
  }
  const cursor = line(0, P, 0, H - P, "cursor");
  cursor.style.display = "none";
  svg.append(cursor);
  const readout = el("div", { class: "readout muted" }, "\u00a0");
  const show = (i) => {
    const p = points[i];
    if (!p) return;
    cursor.setAttribute("x1", x(i)); cursor.setAttribute("x2", x(i)); cursor.style.display = "";
    const value = (v) => (v === null || v === undefined ? "-" : format(v));
    readout.textContent = `${p.at.slice(11, 19)}  ` + series.map((s) => `${s.label} ${value(p[s.key])}`).join("  ");
  };
  svg.addEventListener("mousemove", (ev) => {
    const box = svg.getBoundingClientRect();
    const at = ((ev.clientX - box.left) / box.width) * W;
    const i = Math.max(0, Math.min(points.length - 1, Math.round(((at - P) / (W - 2 * P)) * (points.length - 1))));
    hover = { title, i };
    show(i);
  });
  svg.addEventListener("mouseleave", () => { cursor.style.display = "none"; hover = null; });
  // By keyboard: focus a chart, then the arrow keys move along it (Home and End to its ends).
  svg.setAttribute("tabindex", "0");
  svg.id = `chart-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  svg.addEventListener("focus", () => {
    if (!hover || hover.title !== title) hover = { title, i: points.length - 1 };
    show(hover.i);
  });
  svg.addEventListener("blur", () => { cursor.style.display = "none"; });
  svg.addEventListener("keydown", (ev) => {
    const i = hover && hover.title === title ? hover.i : points.length - 1;
    const to = { ArrowLeft: i - 1, ArrowRight: i + 1, Home: 0, End: points.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    hover = { title, i: Math.max(0, Math.min(points.length - 1, to)) };
    show(hover.i);
  });
  if (hover && hover.title === title) show(Math.min(hover.i, points.length - 1));
  return el("figure", { class: "chart", "data-chart": title },
    el("figcaption", {}, title, " ", series.map((s) => el("span", { class: `key ${s.cls}` }, s.label))), svg, readout);
}

/** The metrics window the page holds while the metrics view is open; points arrive on the live socket. */
let metricsWindow = null;

function onMetrics(points) {
  if (!metricsWindow) return;
  // A point read with the window and sent on the socket as well is kept once.
  const last = metricsWindow.points.length ? metricsWindow.points[metricsWindow.points.length - 1].at : "";
  for (const p of points) if (p.at > last) metricsWindow.points.push(p);
  while (metricsWindow.points.length > 360) metricsWindow.points.shift();
  drawCharts();
}

async function reloadMetrics() {
  try {
    const m = await call("GET", "/metrics");
    if (!metricsWindow) return;
    metricsWindow.points = m.points.slice();
    drawCharts();
  } catch (_) { /* the next reconnect tries again */ }
}

const fmt = {
  n: (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2).replace(/\.?0+$/, "")),
  pct: (v) => `${(v * 100).toFixed(0)}%`,
  secs: (v) => (v < 1 ? `${(v * 1000).toFixed(0)} ms` : `${v.toFixed(1)} s`),
  usd: (v) => `$${v < 1 ? v.toFixed(4) : v.toFixed(2)}`,
};

function drawCharts() {
  const charts = $("#charts");
  if (!charts || !metricsWindow) { metricsWindow = null; return; }
  const pts = metricsWindow.points;
  replaceKeepingFocus(charts, [
    chart("Queue depth", pts, [{ key: "queued", label: "queued", cls: "a" }, { key: "running", label: "running", cls: "b" }], fmt.n),
    chart("Throughput (runs/s)", pts, [{ key: "throughput", label: "runs/s", cls: "a" }], fmt.n),
    chart("Queue wait", pts, [{ key: "latency_p50", label: "p50", cls: "a" }, { key: "latency_p95", label: "p95", cls: "b" },
      { key: "latency_p99", label: "p99", cls: "c" }], fmt.secs),
    chart("Failure rate", pts, [{ key: "failure_rate", label: "failed", cls: "c" }], fmt.pct),
    chart("Utilization", pts, [{ key: "utilization", label: "slots used", cls: "b" }], fmt.pct),
    chart("Cost", pts, [{ key: "cost_usd", label: "spent", cls: "a" }], fmt.usd)]);
  $("#metrics-empty").hidden = pts.length > 0;
}

async function metricsView() {
  const show = stage();
  const [m, costs] = await Promise.all([call("GET", "/metrics"), call("GET", "/costs?by=day&since=24h")]);
  metricsWindow = { points: m.points.slice() };
  const today = (costs.rows.find((r) => r.key === new Date().toISOString().slice(0, 10)) || { cost_usd: 0 }).cost_usd;
  show(el("h1", {}, "Metrics: the last hour"),
    el("p", { id: "metrics-summary" }, `one point every ${m.interval_secs} s · queue ${m.queue_trend}`,
      ` (${m.queue_trend_per_min.toFixed(1)}/min) · spent today ${fmt.usd(today)}`),
    el("div", { id: "charts", class: "charts" }),
    el("p", { id: "metrics-empty", class: "muted" }, "No samples yet: the hub takes one every few seconds."));
  drawCharts();
  // New points arrive on the socket (onMetrics).
  return { refresh: null };
}

async function locksView() {
  const show = stage();
  let problem = "";
  const act = async (path, body) => {
    try { await call("POST", path, body); problem = ""; }
    catch (e) { problem = e.message; }
    await draw();
  };
  const unlock = (name) => el("button", { type: "button", class: "unlock", onclick: async () => {
    if (confirm(`Force ${name} free? Its holder is not told.`)) await act("/locks/unlock", { name });
  } }, "Force unlock");
  const approve = (t, what, body) => el("button", { type: "button", class: what, onclick: () => act(`/tasks/${t.id}/${what}`, body) },
    what === "approve" ? "Approve" : "Reject");
  const draw = async () => {
    const [locks, conflicts, pending] = await Promise.all([
      call("GET", "/locks"), call("GET", "/conflicts?state=open"), call("GET", "/tasks?state=pending_approval&limit=200"),
    ]);
    show(el("h1", {}, "Approvals, locks and conflicts"), el("p", { id: "locks-error", class: "error", role: "alert" }, problem),
      el("h2", {}, "Waiting for approval"),
      pending.tasks.length ? el("table", { id: "approvals" }, el("tbody", {}, pending.tasks.map((t) => el("tr", { "data-task": t.id },
        el("td", {}, el("a", { href: `#/tasks/${t.id}` }, t.id)), el("td", {}, t.runner), el("td", {}, t.prompt.slice(0, 80)),
        el("td", {}, approve(t, "approve", {}), " ", approve(t, "reject", { reason: "rejected from the dashboard" }))))))
        : el("p", { class: "muted" }, "Nothing waits for approval."),
      el("h2", {}, "Locks"),
      locks.held.length || locks.waiting.length ? el("table", { id: "locks" }, el("tbody", {},
        locks.held.map((l) => el("tr", { "data-lock": l.name }, el("td", {}, l.name), el("td", {}, l.mode),
          el("td", {}, el("a", { href: `#/tasks/${l.task}` }, l.task)), el("td", {}, "held since ", l.since), el("td", {}, unlock(l.name)))),
        locks.waiting.map((l) => el("tr", {}, el("td", {}, l.name), el("td", {}, l.mode),
          el("td", {}, el("a", { href: `#/tasks/${l.task}` }, l.task)), el("td", {}, "waits for ", l.waits_for.join(", ")), el("td", {})))))
        : el("p", { class: "muted" }, "No lock is held."),
      el("h2", {}, "Open conflicts"),
      conflicts.length ? el("table", { id: "conflicts" }, el("tbody", {}, conflicts.map((c) => el("tr", {},
        el("td", {}, `#${c.id} ${c.repo}`), el("td", {}, c.files.join(", ")),
        el("td", {}, "goes on: ", el("a", { href: `#/tasks/${c.winner}` }, c.winner)),
        el("td", {}, "paused: ", el("a", { href: `#/tasks/${c.loser}` }, c.loser)),
        el("td", {}, c.decision ? el("a", { href: "#/decisions" }, `decision #${c.decision}`) : "-")))))
        : el("p", { class: "muted" }, "No open conflict."));
  };
  await draw();
  const relevant = (e) => /^(lock|conflict|task)\./.test(e.kind);
  return { refresh: (events) => (events.some(relevant) ? draw() : null) };
}

/** What the last admin action said; kept across the view's redraws. */
let adminNote = "";

async function adminView() {
  const show = stage();
  const [db, backups, config] = await Promise.all([call("GET", "/admin/db"), call("GET", "/admin/backups"), call("GET", "/config")]);
  const out = el("pre", { class: "log", id: "admin-out", "aria-live": "polite" }, adminNote);
  const say = (text) => { adminNote = text; out.textContent = text; };
  const run = (label, method, path, id, told) => el("button", { type: "button", id, onclick: async () => {
    say(`${label}…`);
    try { say(told(await call(method, path, {}))); if (out.isConnected) await adminView(); }
    catch (e) { say(e.message); }
  } }, label);
  const backedUp = (b) => `Backed up to ${b.path} (${(b.bytes / 1048576).toFixed(1)} MiB${b.tasks != null ? `, ${b.tasks} tasks` : ""}).`;
  const checked = (c) => (c.findings.length
    ? `${c.findings.length} problems:\n` + c.findings.map((f) => `- ${f.kind}: ${f.detail}`).join("\n")
      + "\nmuster check --repair fixes what can be fixed; see docs/troubleshooting.md."
    : "The check found no problem: the database is consistent.");
  const keys = config.settings;
  show(el("h1", {}, "Admin"),
    el("div", { class: "row" }, run("Back up now", "POST", "/admin/backups", "backup-now", backedUp),
      run("Check the database", "POST", "/admin/check", "check-now", checked)), out,
    el("h2", {}, "Database"), el("pre", { class: "log" }, JSON.stringify(db, null, 2)),
    el("h2", {}, "Backups"),
    el("table", { id: "backups" }, el("tbody", {}, backups.map((b) =>
      el("tr", {}, el("td", {}, b.file), el("td", {}, b.created_at), el("td", {}, `${(b.bytes / 1048576).toFixed(1)} MiB`))))),
    el("h2", {}, "Settings"),
    el("table", { id: "settings" }, el("tbody", {}, keys.map((k) => {
      // A setting keeps its kind: numbers and switches are sent as such.
      const input = typeof k.value === "boolean"
        ? el("select", { "aria-label": k.key }, ["true", "false"].map((v) => el("option", { value: v, selected: String(k.value) === v }, v)))
        : el("input", { value: String(k.value), "aria-label": k.key, size: 14 });
      const typed = () => {
        if (typeof k.value === "boolean") return input.value === "true";
        if (typeof k.value !== "number") return input.value;
        const n = Number(input.value);
        if (input.value.trim() === "" || !Number.isFinite(n)) throw new Error(`${k.key} takes a number, not ${JSON.stringify(input.value)}`);
        return n;
      };
      return el("tr", { "data-setting": k.key }, el("td", {}, k.key), el("td", { class: "nowrap" }, input, " ",
        el("button", { type: "button", onclick: async () => {
          try { await call("PUT", "/config", { [k.key]: typed() }); say(`${k.key} set to ${input.value}`); if (out.isConnected) await adminView(); }
          catch (e) { say(e.message); }
        } }, "Set")), el("td", { class: "muted" }, k.description));
    }))));
  // Nothing here changes by itself often enough to redraw under a person typing a setting.
  return { refresh: null };
}

const STATES = ["queued", "running", "assigned", "needs_decision", "pending_approval", "blocked", "succeeded", "failed", "cancelled", "skipped"];
const PRIORITIES = ["urgent", "high", "normal", "low"];
const PAGE = 50;
/** The cursors of the pages before this one, so "Newer" goes back without a new query. */
let taskPages = [];
/** A task being written, kept while the list beside it is filtered or paged. */
let taskDraft = { runner: "shell", priority: "normal" };

/** The hash's query (`#/tasks?state=failed`) as an object. */
function hashQuery() {
  return Object.fromEntries(new URLSearchParams(location.hash.split("?")[1] || ""));
}

function setHashQuery(base, q) {
  const clean = Object.fromEntries(Object.entries(q).filter(([, v]) => v !== "" && v !== undefined && v !== null));
  const text = new URLSearchParams(clean).toString();
  location.hash = text ? `${base}?${text}` : base;
}

async function tasksView() {
  const show = stage();
  const q = hashQuery();
  const d = taskDraft;
  const prompt = el("textarea", { id: "task-prompt", required: true });
  prompt.value = d.prompt || "";
  const form = el("form", { id: "task-form", onsubmit: submitTask, oninput: (ev) => {
    const key = { "task-prompt": "prompt", "task-runner": "runner", "task-priority": "priority", "task-repo": "repo", "task-caps": "caps" }[ev.target.id];
    if (key) taskDraft[key] = ev.target.value;
  } },
    el("h2", {}, "Submit a task"),
    el("label", { for: "task-prompt" }, "Prompt"), prompt,
    el("div", { class: "row" },
      el("label", { for: "task-runner" }, "Runner"), el("input", { id: "task-runner", value: d.runner || "", size: 10 }),
      el("label", { for: "task-priority" }, "Priority"),
      el("select", { id: "task-priority" }, ["normal", "urgent", "high", "low"].map((p) => el("option", { value: p, selected: p === d.priority }, p))),
      el("label", { for: "task-repo" }, "Repository"), el("input", { id: "task-repo", size: 10, placeholder: "none", value: d.repo || "" }),
      el("label", { for: "task-caps" }, "Capabilities"), el("input", { id: "task-caps", size: 12, placeholder: "gpu, linux", value: d.caps || "" }),
      el("button", { type: "submit", class: "primary", id: "task-submit" }, "Submit")),
    el("p", { id: "task-error", class: "error", role: "alert" }));
  const pick = (id, label, options, value) => [el("label", { for: id }, label),
    el("select", { id }, el("option", { value: "" }, "any"), options.map((o) => el("option", { value: o, selected: o === value }, o)))];
  const text = (id, label, value, size) => [el("label", { for: id }, label), el("input", { id, value: value || "", size })];
  const filters = el("form", { id: "task-filters", class: "row", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    taskPages = [];
    setHashQuery("#/tasks", {
      state: $("#filter-state").value, priority: $("#filter-priority").value, runner: $("#filter-runner").value.trim(),
      capability: $("#filter-capability").value.trim(), q: $("#task-search").value.trim(),
    });
  } },
  pick("filter-state", "State", STATES, q.state), pick("filter-priority", "Priority", PRIORITIES, q.priority),
  text("filter-runner", "Runner", q.runner, 8), text("filter-capability", "Capability", q.capability, 8),
  text("task-search", "Search", q.q, 18),
  el("button", { type: "submit", id: "filter-apply" }, "Filter"),
  el("a", { href: "#/tasks", onclick: () => { taskPages = []; } }, "clear"));
  for (const id of ["filter-state", "filter-priority"]) filters.querySelector(`#${id}`).addEventListener("change", () => filters.requestSubmit());
  const body = el("tbody", { id: "tasks-body" });
  const newer = el("button", { type: "button", id: "tasks-newer", onclick: () => {
    taskPages.pop();
    setHashQuery("#/tasks", { ...q, before: taskPages[taskPages.length - 1] });
  } }, "← Newer");
  const older = el("button", { type: "button", id: "tasks-older" }, "Older →");
  const info = el("span", { id: "tasks-info", class: "muted" });
  show(el("h1", {}, "Tasks"), form, filters,
    el("table", { id: "tasks" },
      el("thead", {}, el("tr", {}, ["Task", "State", "Priority", "Runner", "Attempts", "Created", "Prompt"].map((h) => el("th", {}, h)))),
      body),
    el("div", { class: "row" }, newer, info, older));
  const query = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ["state", "priority", "runner", "capability", "q", "before"]) if (q[k]) query.set(k, q[k]);
  const load = async () => {
    const list = await call("GET", `/tasks?${query}`);
    body.replaceChildren(...list.tasks.map((t) => el("tr", { "data-task": t.id },
      el("td", {}, el("a", { href: `#/tasks/${t.id}` }, t.id)),
      el("td", { class: `state-${t.state}` }, t.state), el("td", {}, t.priority), el("td", {}, t.runner),
      el("td", {}, `${t.attempts}/${t.max_attempts}`), el("td", { class: "muted nowrap" }, t.created_at.replace("T", " ").replace("Z", "")),
      el("td", {}, t.prompt.length > 80 ? t.prompt.slice(0, 79) + "…" : t.prompt))));
    if (!list.tasks.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No task matches.")));
    newer.disabled = !q.before;
    older.disabled = list.next === null || list.next === undefined;
    older.onclick = () => {
      taskPages.push(list.next);
      setHashQuery("#/tasks", { ...q, before: list.next });
    };
    info.textContent = `page ${taskPages.length + 1} · ${list.tasks.length} tasks`;
  };
  await load();
  return { refresh: (events) => (events.some((e) => e.task) ? load() : null) };
}

async function submitTask(ev) {
  ev.preventDefault();
  const repo = $("#task-repo").value.trim();
  const caps = $("#task-caps").value.split(",").map((c) => c.trim()).filter(Boolean);
  try {
    const created = await call("POST", "/tasks", {
      prompt: $("#task-prompt").value, runner: $("#task-runner").value || undefined, priority: $("#task-priority").value,
      repo: repo || undefined, capabilities: caps.length ? caps : undefined,
    });
    taskDraft = { runner: taskDraft.runner, priority: taskDraft.priority };
    location.hash = `#/tasks/${created.task.id}`;
  } catch (e) {
    $("#task-error").textContent = e.message;
  }
}

const tokens = (r) => r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens;

function attemptRow(a) {
  const r = a.report;
  return el("tr", { "data-attempt": a.number },
    el("td", {}, `#${a.number}`), el("td", {}, a.agent), el("td", {}, a.runner || ""),
    el("td", { class: a.outcome ? `state-${a.outcome}` : "" }, a.outcome || a.live || "running",
      a.live_detail ? el("span", { class: "muted" }, ` (${a.live_detail})`) : ""),
    el("td", { class: "muted" }, a.reason || a.summary || ""),
    el("td", { class: "nowrap" }, r ? `${tokens(r)} tokens` : ""),
    el("td", { class: "nowrap" }, r && r.cost_usd != null ? fmt.usd(r.cost_usd) : ""),
    el("td", { class: "muted" }, r ? [r.model, r.turns != null ? `${r.turns} turns` : null, `${r.tool_uses} tool call${r.tool_uses === 1 ? "" : "s"}`]
      .filter(Boolean).join(" · ") : ""));
}

function stepRow(s) {
  return el("li", { class: `step-${s.kind}${s.is_error ? " failed" : ""}` },
    el("span", { class: "muted nowrap" }, `#${s.attempt} ${s.at.slice(11, 19)} `),
    el("strong", {}, s.kind), s.name ? ` ${s.name}` : "", ": ", s.summary,
    s.duration_ms != null ? el("span", { class: "muted" }, ` (${s.duration_ms} ms)`) : "");
}

/** A part of the task page loaded when it is opened. */
function lazy(title, id, load) {
  const body = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  const d = el("details", { id }, el("summary", {}, title), body);
  d.addEventListener("toggle", async () => {
    if (!d.open || d.dataset.loaded) return;
    d.dataset.loaded = "1";
    try { body.replaceChildren(...[await load()].flat()); }
    catch (e) { body.replaceChildren(el("p", { class: "error" }, e.message)); delete d.dataset.loaded; }
  });
  return d;
}

async function taskView(id) {
  const show = stage();
  const path = `/tasks/${encodeURIComponent(id)}`;
  const head = el("div", { id: "task-head" });
  const log = el("pre", { class: "log", id: "task-log", "data-task": id, tabindex: 0 });
  const steps = el("ol", { id: "task-steps", class: "steps" });
  const attempts = el("tbody", { id: "task-attempts" });
  const promptText = el("pre", { class: "log", id: "task-prompt-text" });
  const actionError = el("p", { id: "task-action-error", class: "error", role: "alert" });
  const move = el("select", { id: "task-move", onchange: async (e) => {
    try { await call("POST", `${path}/move`, { priority: e.target.value }); await load(); }
    catch (err) { actionError.textContent = err.message; }
  } }, PRIORITIES.map((p) => el("option", { value: p }, p)));
  const act = (label, action, body, bid) => el("button", { type: "button", id: bid, onclick: async () => {
    try { await call("POST", `${path}/${action}`, body || {}); await load(); }
    catch (e) { actionError.textContent = e.message; }
  } }, label);
  const diff = lazy("Diff", "task-diff", async () => {
    const d = await call("GET", `${path}/diff`);
    return [el("p", { class: "muted" }, `attempt ${d.attempt} on ${d.branch} in ${d.repo}`, d.kept_at ? ` · kept as ${d.kept_at}` : ""),
      el("pre", { class: "log diff" }, d.diff.split("\n").map((l) => el("span", {
        class: l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : "",
      }, l, "\n"))),
      d.diff_truncated ? el("p", { class: "muted" }, "The diff is cut off here; muster task diff shows it whole.") : ""];
  });
  const transcript = lazy("Transcript (the latest attempt's raw standard output)", "task-transcript", async () => {
    const t = await call("GET", path);
    const last = t.attempts_detail[t.attempts_detail.length - 1];
    if (!last) return el("p", { class: "muted" }, "No attempt yet.");
    if (last.output_pruned) return el("p", { class: "muted" }, "Retention removed this attempt's output.");
    const page = await call("GET", `${path}/logs?attempt=${last.number}&limit=10000`);
    return el("pre", { class: "log" }, page.chunks.filter((c) => c.stream === "stdout").map((c) => c.data).join(""));
  });
  show(
    el("h1", {}, "Task ", el("span", { id: "task-id" }, id)), head,
    el("div", { class: "row" },
      act("Cancel", "cancel", {}, "task-cancel"), act("Retry", "retry", {}, "task-retry"),
      act("Approve", "approve", {}, "task-approve"),
      act("Skip", "skip", { reason: "skipped from the dashboard" }, "task-skip"),
      el("label", { for: "task-move" }, "Priority"), move),
    actionError,
    el("h2", {}, "Prompt"), promptText,
    el("h2", {}, "Output"), log,
    el("h2", {}, "Attempts"),
    el("table", { id: "task-attempts-table" },
      el("thead", {}, el("tr", {}, ["", "Agent", "Runner", "Outcome", "Reason", "Tokens", "Cost", "Model"].map((h) => el("th", {}, h)))),
      attempts),
    el("h2", {}, "Steps"), steps,
    diff, transcript);
  let shownSteps = -1;
  const load = async () => {
    const t = await call("GET", path);
    const reports = t.attempts_detail.map((a) => a.report).filter(Boolean);
    const spentTokens = reports.reduce((n, r) => n + tokens(r), 0);
    const spentUsd = reports.reduce((n, r) => n + (r.cost_usd || 0), 0);
    head.replaceChildren(el("p", {}, "State: ", el("strong", { id: "task-state", class: `state-${t.state}` }, t.state),
      t.reason ? el("span", { class: "muted" }, ` (${t.reason})`) : "",
      " · priority ", t.priority, " · runner ", t.runner, " · attempts ", `${t.attempts}/${t.max_attempts}`,
      t.agent ? ` · on ${t.agent}` : "",
      t.capabilities.length ? ` · needs ${t.capabilities.join(", ")}` : ""),
    el("p", { id: "task-spent" }, "Spent: ", `${spentTokens} tokens`, " · ", fmt.usd(spentUsd),
      t.max_cost_usd != null ? el("span", { class: "muted" }, ` of at most ${fmt.usd(t.max_cost_usd)}`) : ""),
    t.workspace ? el("p", { class: "muted" }, `workspace: ${t.workspace.repo || ""} at ${t.workspace.base || "HEAD"}`) : "");
    promptText.textContent = t.prompt;
    move.value = t.priority;
    attempts.replaceChildren(...t.attempts_detail.map(attemptRow));
    const count = t.attempts_detail.reduce((n, a) => n + a.steps, 0);
    if (count !== shownSteps) {
      shownSteps = count;
      const page = await call("GET", `${path}/steps`);
      // A long run keeps its latest 500 steps on the page; muster task steps lists all.
      const tail = page.steps.slice(-500);
      steps.replaceChildren(...tail.map(stepRow));
      if (!tail.length) steps.replaceChildren(el("li", { class: "muted" }, "No steps: the runner reports none."));
    }
  };
  await load();
  if (show.current()) live.follow(id, 0);
  return { refresh: (events) => (events.some((e) => e.task === id) ? load() : null) };
}

async function decisionsView() {
  const show = stage();
  const draw = async () => {
    const open = await call("GET", "/decisions");
    show(el("h1", {}, "Decisions"), el("p", { id: "decisions-error", class: "error", role: "alert" }),
      el("ul", { id: "decisions" }, open.map((d) => el("li", { "data-decision": d.id },
        el("p", {}, `#${d.id} `, el("a", { href: `#/tasks/${d.task}` }, d.task), " asks:"),
        el("pre", { class: "log" }, d.question),
        el("div", { class: "row" }, d.options.map((o) => el("button", { type: "button", class: "answer", onclick: async () => {
          try { await call("POST", `/decisions/${d.id}/answer`, { option: o }); await draw(); }
          catch (e) { $("#decisions-error").textContent = e.message; }
        } }, o)))))),
      open.length ? "" : el("p", { class: "muted" }, "Nothing waits for an answer."));
  };
  await draw();
  return { refresh: (events) => (events.some((e) => e.kind.startsWith("decision.")) ? draw() : null) };
}

// ---- the timeline: a virtual list ----------------------------------------------

const ROW = 30;
/** The timeline on screen, if any: newest first, only the rows in view are in the page. */
let timeline = null;

function matches(f, e) {
  return (!f.task || e.task === f.task) && (!f.agent || e.agent === f.agent)
    && (!f.kind || e.kind === f.kind || e.kind.startsWith(`${f.kind}.`));
}

function timelineList(filter) {
  const rows = [];
  const box = el("div", { id: "timeline", class: "vlist", role: "list", tabindex: 0, "aria-label": "events, newest first" });
  const spacer = el("div", { class: "vspace" });
  box.append(spacer);
  let loading = false;
  let exhausted = false;
  // Rows on screen, by sequence number: kept while in view, so a focused link stays focused.
  const onScreen = new Map();
  const makeRow = (e) => el("div", { class: "ev", role: "listitem", "data-seq": e.seq },
    el("span", { class: "muted" }, e.seq), el("span", { class: "muted" }, e.at.slice(0, 23).replace("T", " ")),
    el("span", { class: "kind" }, e.kind),
    e.task ? el("a", { href: `#/tasks/${e.task}` }, e.task) : el("span", {}),
    e.agent ? el("span", {}, e.agent) : el("span", {}),
    el("span", { class: "detail", title: e.detail || "" }, e.detail || ""));
  const draw = () => {
    spacer.style.height = `${rows.length * ROW}px`;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 10);
    const last = Math.min(rows.length, Math.ceil((box.scrollTop + box.clientHeight) / ROW) + 10);
    const wanted = new Set();
    for (let i = first; i < last; i++) {
      const e = rows[i];
      let row = onScreen.get(e.seq);
      if (!row) {
        row = makeRow(e);
        onScreen.set(e.seq, row);
        box.append(row);
      }
      // Through the CSSOM: the page's policy allows no inline style attributes.
      row.style.top = `${i * ROW}px`;
      wanted.add(e.seq);
    }
    for (const [seq, row] of onScreen) {
      if (!wanted.has(seq)) { row.remove(); onScreen.delete(seq); }
    }
    const info = $("#timeline-info");
    if (info) info.textContent = `${rows.length} events loaded${exhausted ? " (all)" : ""}`;
  };
  const older = async () => {
    if (loading || exhausted) return;
    loading = true;
    try {
      const before = rows.length ? rows[rows.length - 1].seq : live.last + 1;
      const q = new URLSearchParams({ before: String(before), limit: "500" });
      for (const k of ["task", "agent", "kind"]) if (filter[k]) q.set(k, filter[k]);
      const page = await call("GET", `/events?${q}`);
      for (let i = page.events.length - 1; i >= 0; i--) rows.push(page.events[i]);
      exhausted = page.events.length < 500;
      draw();
    } finally {
      loading = false;
    }
  };
  box.addEventListener("scroll", () => {
    draw();
    if (box.scrollTop + box.clientHeight > rows.length * ROW - 20 * ROW) older();
  }, { passive: true });
  return {
    box, older, draw,
    arrived(events) {
      const fresh = events.filter((e) => matches(filter, e)).reverse();
      if (!fresh.length || !box.isConnected) return;
      rows.unshift(...fresh);
      if (rows.length > 50000) { rows.length = 50000; exhausted = false; }
      // Keep the reader's place when they have scrolled down: grow the list first, then move.
      spacer.style.height = `${rows.length * ROW}px`;
      if (box.scrollTop > 0) box.scrollTop += fresh.length * ROW;
      draw();
    },
  };
}

async function timelineView() {
  const show = stage();
  const q = hashQuery();
  const input = (id, label, value, placeholder) => [el("label", { for: id }, label),
    el("input", { id, value: value || "", size: 16, placeholder })];
  const filters = el("form", { id: "timeline-filters", class: "row", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    setHashQuery("#/timeline", { task: $("#tl-task").value.trim(), agent: $("#tl-agent").value.trim(), kind: $("#tl-kind").value.trim() });
  } },
  input("tl-task", "Task", q.task, "t_…"), input("tl-agent", "Agent", q.agent, "builder-1"),
  input("tl-kind", "Kind", q.kind, "task.failed or lock"),
  el("button", { type: "submit", id: "tl-apply" }, "Filter"), el("a", { href: "#/timeline" }, "clear"),
  el("span", { id: "timeline-info", class: "muted" }));
  const list = timelineList({ task: q.task, agent: q.agent, kind: q.kind });
  show(el("h1", {}, "Timeline"), filters, list.box);
  timeline = list;
  await list.older();
  return { refresh: null };
}

// ---- routing -------------------------------------------------------------------

const routes = [
  [/^#\/agents/, agentsView],
  [/^#\/tasks\/(t_[0-9a-z]+)/, taskView],
  [/^#\/tasks/, tasksView],
  [/^#\/decisions/, decisionsView],
  [/^#\/metrics/, metricsView],
  [/^#\/locks/, locksView],
  [/^#\/admin/, adminView],
  [/^#\/timeline/, timelineView],
  [/^/, overview],
];

async function route() {
  if ($("#top").hidden) return;
  const hash = location.hash || "#/overview";
  for (const a of document.querySelectorAll("#nav a")) {
    if (hash.split("?")[0].startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, view] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    timeline = null;
    metricsWindow = null;
    const gen = ++routeGen;
    const show = stage();
    if (view !== taskView) live.follow(null);
    const render = async () => {
      try {
        const made = await view(...m.slice(1));
        // A view that says how to refresh itself does so; others are drawn again.
        if (gen === routeGen) current = { refresh: made && "refresh" in made ? made.refresh : render };
      } catch (e) {
        if (gen === routeGen) current = { refresh: null };
        if (e.status !== 401) show(el("p", { class: "error" }, e.message));
      }
      // What arrived while the view loaded.
      if (gen === routeGen && batch.events.length) scheduleRefresh();
    };
    current = { refresh: null, loading: true };
    await render();
    const h1 = $("#view h1");
    if (h1 && document.activeElement === document.body) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
    return;
  }
}

// ---- keyboard and theme ----------------------------------------------------------

const KEYS = { o: "#/overview", a: "#/agents", t: "#/tasks", d: "#/decisions", l: "#/locks", m: "#/metrics", e: "#/timeline", s: "#/admin" };
let leader = false;

function onKey(ev) {
  const typing = ev.target.closest && ev.target.closest("input, textarea, select, [contenteditable]");
  if (ev.key === "Escape") { $("#keys").hidden = true; if (typing) ev.target.blur(); return; }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey || $("#top").hidden) return;
  if (leader) {
    leader = false;
    if (KEYS[ev.key]) { ev.preventDefault(); location.hash = KEYS[ev.key]; }
    return;
  }
  if (ev.key === "g") { leader = true; setTimeout(() => { leader = false; }, 1500); }
  else if (ev.key === "?") { $("#keys").hidden = !$("#keys").hidden; }
  else if (ev.key === "/") {
    const search = $("#task-search") || $("#tl-kind");
    if (search) { ev.preventDefault(); search.focus(); }
  } else if (ev.key === "n" && location.hash.startsWith("#/tasks") && $("#task-prompt")) {
    ev.preventDefault(); $("#task-prompt").focus();
  }
}

const THEMES = ["auto", "light", "dark"];

function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  $("#theme").textContent = `theme: ${theme}`;
}

function cycleTheme() {
  const now = localStorage.getItem("muster-theme") || "auto";
  const next = THEMES[(THEMES.indexOf(now) + 1) % THEMES.length];
  localStorage.setItem("muster-theme", next);
  applyTheme(next);
}

window.addEventListener("hashchange", route);
document.addEventListener("keydown", onKey);
document.addEventListener("DOMContentLoaded", async () => {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  $("#theme").addEventListener("click", cycleTheme);
  // The skip link moves the focus without changing the address (which would change the page).
  $(".skip").addEventListener("click", (ev) => { ev.preventDefault(); $("#main").focus(); });
  applyTheme(localStorage.getItem("muster-theme") || "auto");
  try {
    const who = await call("GET", "/ui/session");
    await start(who.name);
  } catch (_) {
    showSignIn();
  }
});
