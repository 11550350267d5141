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
  const opts = { method, headers: {}, credentials: "same-origin" };
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
    start(who.name);
  } catch (e) {
    $("#signin-error").textContent = e.message;
  }
}

async function signOut() {
  try { await call("DELETE", "/ui/session"); } catch (_) { /* signed out either way */ }
  showSignIn("Signed out.");
}

function start(name) {
  $("#signin").hidden = true;
  $("#top").hidden = false;
  $("#view").hidden = false;
  $("#who").textContent = name;
  live.start();
  route();
}

// ---- the live stream -----------------------------------------------------------

const live = {
  socket: null, last: 0, retry: 500, running: false, following: null, timer: null,
  start() {
    this.running = true;
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
    };
    s.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "events") {
        for (const e of msg.events) this.last = Math.max(this.last, e.seq);
        onEvents(msg.events);
      } else if (msg.type === "output") {
        onOutput(msg.task, msg.chunks);
      } else if (msg.type === "metrics") {
        onMetrics(msg.point);
      }
    };
    s.onclose = () => {
      if (!this.running) return;
      setConn("reconnecting");
      // Catch up from the last event seen once back.
      setTimeout(() => this.running && this.connect(), this.retry);
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

let refreshTimer = null;
function onEvents(events) {
  const timeline = $("#timeline");
  if (timeline) for (const e of events) timeline.prepend(eventRow(e));
  const latest = $("#latest");
  if (latest) {
    for (const e of events) latest.prepend(eventRow(e));
    while (latest.children.length > 15) latest.lastChild.remove();
  }
  // Views re-read what they show, at most a few times a second.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { refreshAlerts(); if (current.refresh) current.refresh(); }, 150);
}

function onOutput(task, chunks) {
  const log = $("#task-log");
  if (!log || log.dataset.task !== task) return;
  for (const c of chunks) log.append(document.createTextNode(c.data));
  log.scrollTop = log.scrollHeight;
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

let current = { refresh: null };

function setView(...children) {
  $("#view").replaceChildren(...children);
}

function card(key, value, id) {
  return el("div", { class: "card" }, el("div", { class: "n", id }, value), el("div", { class: "k" }, key));
}

async function overview() {
  const s = await call("GET", "/status");
  const agents = await call("GET", "/agents");
  const t = s.tasks || {};
  const online = agents.filter((a) => a.connected).length;
  const reasons = (s.health && s.health.reasons) || [];
  setView(
    el("h1", {}, "Overview"),
    el("p", { id: "health" }, "Health: ", el("strong", {}, (s.health && s.health.level) || "?"),
      reasons.length ? el("span", { class: "muted" }, " — ", reasons.join("; ")) : ""),
    el("div", { class: "cards" },
      card("queued", t.queued || 0, "count-queued"), card("running", t.running || 0, "count-running"),
      card("needs decision", (t.needs_decision || 0) + (t.pending_approval || 0), "count-waiting"),
      card("agents online", `${online}/${agents.length}`, "count-agents"),
      card("failed", t.failed || 0, "count-failed")),
    el("h2", {}, "Latest events"),
    el("table", {}, el("tbody", { id: "latest" })));
  const page = await call("GET", `/events?after=${Math.max(0, live.last - 15)}&limit=15`);
  const latest = $("#latest");
  for (const e of page.events) latest.prepend(eventRow(e));
}

async function agentsView() {
  const [agents, running, breakers] = await Promise.all([
    call("GET", "/agents"), call("GET", "/tasks?state=running&limit=1000"), call("GET", "/breakers"),
  ]);
  const act = (name, what) => el("button", { type: "button", class: `agent-${what}`, onclick: async () => {
    try { await call("POST", `/agents/${encodeURIComponent(name)}/${what}`, {}); current.refresh(); }
    catch (e) { $("#agents-error").textContent = e.message; }
  } }, what[0].toUpperCase() + what.slice(1));
  setView(el("h1", {}, "Agents"), el("p", { id: "agents-error", class: "error" }),
    el("div", { id: "agents", class: "cards wide" }, agents.map((a) => {
      const runs = running.tasks.filter((t) => t.agent === a.name);
      const breaker = breakers.find((b) => b.scope === "agent" && b.name === a.name);
      return el("div", { class: "card agent", "data-agent": a.name },
        el("h3", {}, a.name, " ", el("span", { class: `agent-state state-${a.state}` }, a.state)),
        el("p", {}, `slots ${a.used_slots}/${a.slots}`, " · runners ", (a.runners || []).join(", ") || "-"),
        a.capabilities.length ? el("p", { class: "muted" }, "capabilities: ", a.capabilities.join(", ")) : "",
        a.unavailable.length ? el("p", { class: "error" }, "doctor: ", a.unavailable.join("; ")) : "",
        breaker ? el("p", { class: "error" }, `circuit ${breaker.state} (${breaker.failures} failures)`) : "",
        el("p", { class: "muted" }, "last seen ", a.last_seen_at || "never", a.version ? ` · ${a.version}` : ""),
        runs.length ? el("ul", {}, runs.map((t) => el("li", {}, el("a", { href: `#/tasks/${t.id}` }, t.id), " ",
          t.prompt.length > 60 ? t.prompt.slice(0, 59) + "…" : t.prompt))) : el("p", { class: "muted" }, "idle"),
        el("div", { class: "row" }, a.paused ? act(a.name, "resume") : act(a.name, "pause"), act(a.name, "drain")));
    })),
    agents.length ? "" : el("p", { class: "muted" }, "No agent is registered. Add one with muster agent add NAME."));
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
    const path = document.createElementNS(svgNs, "polyline");
    const pts = points.map((p, i) => (p[s.key] === null || p[s.key] === undefined ? null : `${x(i)},${y(p[s.key])}`))
      .filter(Boolean).join(" ");
    path.setAttribute("points", pts);
    path.setAttribute("class", `series ${s.cls}`);
    svg.append(path);
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
  if (hover && hover.title === title) show(Math.min(hover.i, points.length - 1));
  return el("figure", { class: "chart", "data-chart": title },
    el("figcaption", {}, title, " ", series.map((s) => el("span", { class: `key ${s.cls}` }, s.label))), svg, readout);
}

/** The metrics window the page holds while the metrics view is open; points arrive on the live socket. */
let metricsWindow = null;

function onMetrics(point) {
  if (!metricsWindow) return;
  metricsWindow.points.push(point);
  if (metricsWindow.points.length > 360) metricsWindow.points.shift();
  drawCharts();
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
  charts.replaceChildren(
    chart("Queue depth", pts, [{ key: "queued", label: "queued", cls: "a" }, { key: "running", label: "running", cls: "b" }], fmt.n),
    chart("Throughput (runs/s)", pts, [{ key: "throughput", label: "runs/s", cls: "a" }], fmt.n),
    chart("Queue wait", pts, [{ key: "latency_p50", label: "p50", cls: "a" }, { key: "latency_p95", label: "p95", cls: "b" },
      { key: "latency_p99", label: "p99", cls: "c" }], fmt.secs),
    chart("Failure rate", pts, [{ key: "failure_rate", label: "failed", cls: "c" }], fmt.pct),
    chart("Utilization", pts, [{ key: "utilization", label: "slots used", cls: "b" }], fmt.pct),
    chart("Cost", pts, [{ key: "cost_usd", label: "spent", cls: "a" }], fmt.usd));
  $("#metrics-empty").hidden = pts.length > 0;
}

async function metricsView() {
  const [m, costs] = await Promise.all([call("GET", "/metrics"), call("GET", "/costs?by=day&since=24h")]);
  metricsWindow = { points: m.points.slice() };
  const today = (costs.rows.find((r) => r.key === new Date().toISOString().slice(0, 10)) || { cost_usd: 0 }).cost_usd;
  setView(el("h1", {}, "Metrics: the last hour"),
    el("p", { id: "metrics-summary" }, `one point every ${m.interval_secs} s · queue ${m.queue_trend}`,
      ` (${m.queue_trend_per_min.toFixed(1)}/min) · spent today ${fmt.usd(today)}`),
    el("div", { id: "charts", class: "charts" }),
    el("p", { id: "metrics-empty", class: "muted" }, "No samples yet: the hub takes one every few seconds."));
  drawCharts();
}

async function locksView() {
  const [locks, conflicts, pending] = await Promise.all([
    call("GET", "/locks"), call("GET", "/conflicts?state=open"), call("GET", "/tasks?state=pending_approval&limit=200"),
  ]);
  const unlock = (name) => el("button", { type: "button", class: "unlock", onclick: async () => {
    if (!confirm(`Force ${name} free? Its holder is not told.`)) return;
    await call("POST", "/locks/unlock", { name }); current.refresh();
  } }, "Force unlock");
  const approve = (t, what, body) => el("button", { type: "button", class: what, onclick: async () => {
    try { await call("POST", `/tasks/${t.id}/${what}`, body); current.refresh(); }
    catch (e) { $("#locks-error").textContent = e.message; }
  } }, what === "approve" ? "Approve" : "Reject");
  setView(el("h1", {}, "Approvals, locks and conflicts"), el("p", { id: "locks-error", class: "error" }),
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
}

/** What the last admin action said; kept across the view's redraws. */
let adminNote = "";

async function adminView() {
  const [db, backups, config] = await Promise.all([call("GET", "/admin/db"), call("GET", "/admin/backups"), call("GET", "/config")]);
  const out = el("pre", { class: "log", id: "admin-out", "aria-live": "polite" }, adminNote);
  const say = (text) => { adminNote = text; out.textContent = text; };
  const run = (label, method, path, id) => el("button", { type: "button", id, onclick: async () => {
    say(`${label}…`);
    try { say(JSON.stringify(await call(method, path, {}), null, 2)); current.refresh(); }
    catch (e) { say(e.message); }
  } }, label);
  const keys = config.settings;
  setView(el("h1", {}, "Admin"),
    el("div", { class: "row" }, run("Back up now", "POST", "/admin/backups", "backup-now"),
      run("Check the database", "POST", "/admin/check", "check-now")), out,
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
      const typed = () => (typeof k.value === "number" ? Number(input.value)
        : typeof k.value === "boolean" ? input.value === "true" : input.value);
      return el("tr", { "data-setting": k.key }, el("td", {}, k.key), el("td", { class: "nowrap" }, input, " ",
        el("button", { type: "button", onclick: async () => {
          try { await call("PUT", "/config", { [k.key]: typed() }); say(`${k.key} set to ${input.value}`); current.refresh(); }
          catch (e) { say(e.message); }
        } }, "Set")), el("td", { class: "muted" }, k.description));
    }))));
}

async function tasksView() {
  const state = (new URLSearchParams(location.hash.split("?")[1] || "")).get("state") || "";
  const list = await call("GET", `/tasks?limit=100${state ? `&state=${encodeURIComponent(state)}` : ""}`);
  const states = ["", "queued", "running", "needs_decision", "pending_approval", "blocked", "succeeded", "failed", "cancelled", "skipped"];
  const form = el("form", { id: "task-form", onsubmit: submitTask },
    el("h2", {}, "Submit a task"),
    el("label", { for: "task-prompt" }, "Prompt"),
    el("textarea", { id: "task-prompt", required: true }),
    el("div", { class: "row" },
      el("label", { for: "task-runner" }, "Runner"), el("input", { id: "task-runner", value: "shell", size: 10 }),
      el("label", { for: "task-priority" }, "Priority"),
      el("select", { id: "task-priority" }, ["normal", "urgent", "high", "low"].map((p) => el("option", { value: p }, p))),
      el("button", { type: "submit", class: "primary", id: "task-submit" }, "Submit")),
    el("p", { id: "task-error", class: "error" }));
  const filter = el("select", { id: "task-state", onchange: (e) => { location.hash = `#/tasks?state=${e.target.value}`; } },
    states.map((s) => el("option", { value: s, selected: s === state }, s || "every state")));
  setView(el("h1", {}, "Tasks"), form, el("div", { class: "row" }, el("label", { for: "task-state" }, "Show"), filter),
    el("table", { id: "tasks" },
      el("thead", {}, el("tr", {}, ["Task", "State", "Priority", "Runner", "Attempts", "Created", "Prompt"].map((h) => el("th", {}, h)))),
      el("tbody", {}, list.tasks.map((t) => el("tr", { "data-task": t.id },
        el("td", {}, el("a", { href: `#/tasks/${t.id}` }, t.id)),
        el("td", { class: `state-${t.state}` }, t.state), el("td", {}, t.priority), el("td", {}, t.runner),
        el("td", {}, `${t.attempts}/${t.max_attempts}`), el("td", { class: "muted" }, t.created_at),
        el("td", {}, t.prompt.length > 80 ? t.prompt.slice(0, 79) + "…" : t.prompt))))));
}

async function submitTask(ev) {
  ev.preventDefault();
  try {
    const created = await call("POST", "/tasks", {
      prompt: $("#task-prompt").value, runner: $("#task-runner").value || undefined, priority: $("#task-priority").value,
    });
    location.hash = `#/tasks/${created.task.id}`;
  } catch (e) {
    $("#task-error").textContent = e.message;
  }
}

async function taskView(id) {
  const t = await call("GET", `/tasks/${encodeURIComponent(id)}`);
  const act = (label, path, body, id) => el("button", { type: "button", id, onclick: async () => {
    try { await call("POST", `/tasks/${encodeURIComponent(t.id)}/${path}`, body || {}); current.refresh(); }
    catch (e) { $("#task-action-error").textContent = e.message; }
  } }, label);
  const attempts = t.attempts_detail || [];
  const existing = $("#task-log");
  const log = existing && existing.dataset.task === t.id ? existing
    : el("pre", { class: "log", id: "task-log", "data-task": t.id });
  setView(
    el("h1", {}, "Task ", el("span", { id: "task-id" }, t.id)),
    el("p", {}, "State: ", el("strong", { id: "task-state", class: `state-${t.state}` }, t.state),
      t.reason ? el("span", { class: "muted" }, ` (${t.reason})`) : "",
      " · priority ", t.priority, " · runner ", t.runner, " · attempts ", `${t.attempts}/${t.max_attempts}`),
    el("div", { class: "row" },
      act("Cancel", "cancel", {}, "task-cancel"), act("Retry", "retry", {}, "task-retry"),
      act("Approve", "approve", {}, "task-approve"),
      act("Skip", "skip", { reason: "skipped from the dashboard" }, "task-skip"),
      el("select", { id: "task-move", onchange: async (e) => {
        try { await call("POST", `/tasks/${encodeURIComponent(t.id)}/move`, { priority: e.target.value }); current.refresh(); }
        catch (err) { $("#task-action-error").textContent = err.message; }
      } }, ["urgent", "high", "normal", "low"].map((p) => el("option", { value: p, selected: p === t.priority }, p)))),
    el("p", { id: "task-action-error", class: "error" }),
    el("h2", {}, "Prompt"), el("pre", { class: "log", id: "task-prompt-text" }, t.prompt),
    el("h2", {}, "Output"), log,
    el("h2", {}, "Attempts"),
    el("table", {}, el("tbody", {}, attempts.map((a) => el("tr", {},
      el("td", {}, `#${a.number}`), el("td", {}, a.agent), el("td", {}, a.outcome || a.live || "running"),
      el("td", { class: "muted" }, a.reason || ""),
      el("td", {}, a.report && a.report.cost_usd != null ? `$${a.report.cost_usd.toFixed(4)}` : ""))))));
  if (log !== existing) live.follow(t.id, 0);
}

async function decisionsView() {
  const open = await call("GET", "/decisions");
  setView(el("h1", {}, "Decisions"), el("ul", { id: "decisions" }, open.map((d) => el("li", { "data-decision": d.id },
    el("p", {}, `#${d.id} `, el("a", { href: `#/tasks/${d.task}` }, d.task), " asks:"),
    el("pre", { class: "log" }, d.question),
    el("div", { class: "row" }, d.options.map((o) => el("button", { type: "button", class: "answer", onclick: async () => {
      await call("POST", `/decisions/${d.id}/answer`, { option: o }); current.refresh();
    } }, o)))))),
    open.length ? "" : el("p", { class: "muted" }, "Nothing waits for an answer."));
}

async function timelineView() {
  const page = await call("GET", `/events?after=${Math.max(0, live.last - 200)}&limit=200`);
  const body = el("tbody", { id: "timeline" });
  for (const e of page.events) body.prepend(eventRow(e));
  setView(el("h1", {}, "Timeline"), el("table", {}, body));
}

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
    a.toggleAttribute("aria-current", hash.startsWith(a.getAttribute("href")));
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
  }
  for (const [pattern, view] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    const render = () => view(...m.slice(1)).catch((e) => {
      if (e.status !== 401) setView(el("p", { class: "error" }, e.message));
    });
    // The timeline and the charts take their news from the live socket itself.
    current = { refresh: view === timelineView || view === metricsView ? null : render };
    if (view !== taskView) live.follow(null);
    await render();
    return;
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", async () => {
  $("#signin").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", signOut);
  try {
    const who = await call("GET", "/ui/session");
    start(who.name);
  } catch (_) {
    showSignIn();
  }
  refreshAlerts();
});
