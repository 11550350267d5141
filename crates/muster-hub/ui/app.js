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
  const agents = await call("GET", "/agents");
  setView(el("h1", {}, "Agents"), el("table", { id: "agents" },
    el("thead", {}, el("tr", {}, ["Name", "State", "Slots", "Runners", "Capabilities", "Last seen"].map((h) => el("th", {}, h)))),
    el("tbody", {}, agents.map((a) => el("tr", { "data-agent": a.name },
      el("td", {}, a.name), el("td", { class: "agent-state" }, a.state),
      el("td", {}, `${a.used_slots}/${a.slots}`),
      el("td", {}, (a.runners || []).join(", ")), el("td", {}, (a.capabilities || []).join(", ")),
      el("td", { class: "muted" }, a.last_seen_at || "-"))))));
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
    current = { refresh: view === timelineView ? null : render };
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
