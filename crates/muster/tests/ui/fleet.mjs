// The dashboard with a big fleet in the store: 200 agents and 50,000 tasks.
// It checks what keeps the page fast at that size (pages from the server,
// a virtual timeline, batched live updates) and writes what it measured to
// SHOTS/fleet-timings.json; speed is reported here, never judged.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const { chromium } = await import(process.env.PLAYWRIGHT);
const hub = process.env.HUB_URL;
const admin = process.env.ADMIN_TOKEN;
const shots = process.env.SHOTS;
const TASKS = Number(process.env.FLEET_TASKS || 50000);
const AGENTS = Number(process.env.FLEET_AGENTS || 200);

const api = async (method, path, body) => {
  const r = await fetch(`${hub}/api/v1${path}`, {
    method, headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
};

/** Runs `make(i)` for i in 0..n, `width` at a time. */
async function pool(n, width, make) {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) {
      const i = next++;
      await make(i);
    }
  }));
}

const timings = {};
const t0 = Date.now();
await pool(AGENTS, 16, async (i) => {
  const r = await api("POST", "/agents", { name: `fleet-${String(i).padStart(3, "0")}`, capabilities: i % 2 ? ["gpu"] : ["linux"] });
  if (r.status !== 201) throw new Error(JSON.stringify(r.body));
});
// Tasks for the codex runner, which no agent here offers: they stay queued.
await pool(TASKS, 64, async (i) => {
  const prompt = i % 1000 === 7 ? `needle-${i} fix the parser` : `filler task ${i}`;
  const r = await api("POST", "/tasks", { prompt, runner: "codex", priority: ["urgent", "high", "normal", "low"][i % 4] });
  if (r.status !== 201) throw new Error(JSON.stringify(r.body));
});
timings.seed_ms = Date.now() - t0;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 850 } });
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
// Main-thread tasks over 50 ms, as the browser reports them.
await page.addInitScript(() => {
  window.longTasks = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longTasks.push(e.duration); })
    .observe({ type: "longtask", buffered: true });
});
const listRequests = [];
page.on("request", (r) => { if (/\/api\/v1\/tasks\?/.test(r.url())) listRequests.push(Date.now()); });

async function step(name, body) {
  try {
    const started = Date.now();
    await body();
    timings[name] = Date.now() - started;
    await page.screenshot({ path: join(shots, `${name}.png`) });
    console.log(`ok ${name}`);
  } catch (e) {
    await page.screenshot({ path: join(shots, `${name}-FAILED.png`) }).catch(() => {});
    console.log(`FAILED ${name}: ${e.stack || e}`);
    throw e;
  }
}

const rows = () => page.$$eval("#tasks-body tr[data-task]", (r) => r.length);

try {
  await page.goto(hub);
  await page.fill("#token", admin);
  await page.click("#signin-submit");
  await page.waitForSelector("#top:not([hidden])");

  await step("fleet-overview", async () => {
    await page.waitForFunction((n) => {
      const q = document.querySelector("#count-queued");
      return q && q.textContent === String(n);
    }, TASKS, { timeout: 30000 });
    await page.waitForFunction((n) => document.querySelector("#count-agents").textContent === `0/${n}`, AGENTS, { timeout: 30000 });
  });

  await step("fleet-tasks-paged", async () => {
    await page.goto(`${hub}/#/tasks`);
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 50, null, { timeout: 30000 });
    await page.click("#tasks-older");
    await page.waitForFunction(() => /page 2/.test(document.querySelector("#tasks-info").textContent), null, { timeout: 30000 });
    if ((await rows()) !== 50) throw new Error("the second page does not hold 50 tasks");
  });

  await step("fleet-tasks-searched", async () => {
    // needle-i for every i with i % 1000 == 7; the last one seeded is searched.
    const last = Math.floor((TASKS - 8) / 1000) * 1000 + 7;
    await page.goto(`${hub}/#/tasks?q=needle-${last}%20`);
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 1, null, { timeout: 30000 });
    await page.goto(`${hub}/#/tasks?q=needle&priority=high`);
    // needle-i has i % 1000 == 7, so i % 4 == 3 (low) for every one: none is high.
    await page.waitForSelector("#tasks-body td.muted:text-is('No task matches.')", { timeout: 30000 });
    await page.goto(`${hub}/#/tasks?q=needle&priority=low`);
    await page.waitForFunction((n) => document.querySelectorAll("#tasks-body tr[data-task]").length === n, Math.min(50, TASKS / 1000), { timeout: 30000 });
  });

  await step("fleet-timeline-virtual", async () => {
    await page.goto(`${hub}/#/timeline`);
    await page.waitForSelector("#timeline .ev", { timeout: 30000 });
    // Scroll to the end of what is loaded a few times: more pages come in, the page holds only the rows in view.
    for (let i = 0; i < 6; i++) {
      const before = await page.$eval("#timeline-info", (e) => parseInt(e.textContent, 10));
      await page.$eval("#timeline", (b) => { b.scrollTop = b.scrollHeight; });
      await page.waitForFunction((n) => parseInt(document.querySelector("#timeline-info").textContent, 10) > n, before, { timeout: 30000 });
    }
    const loaded = await page.$eval("#timeline-info", (e) => parseInt(e.textContent, 10));
    const inPage = await page.$$eval("#timeline .ev", (r) => r.length);
    timings.timeline_loaded = loaded;
    timings.timeline_rows_in_page = inPage;
    if (loaded < 3000) throw new Error(`only ${loaded} events loaded`);
    if (inPage > 120) throw new Error(`${inPage} rows in the page for ${loaded} events: the list is not virtual`);
  });

  await step("fleet-agents", async () => {
    await page.goto(`${hub}/#/agents`);
    await page.waitForFunction((n) => document.querySelectorAll("#agents .agent").length === n, AGENTS, { timeout: 30000 });
  });

  await step("fleet-live-batched", async () => {
    await page.goto(`${hub}/#/tasks?runner=codex`);
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 50, null, { timeout: 30000 });
    listRequests.length = 0;
    // A flood of 1,000 changes: the page re-reads its list a few times, not a thousand.
    const page1 = await api("GET", "/tasks?runner=codex&limit=1000");
    await pool(page1.body.tasks.length, 32, (i) => api("POST", `/tasks/${page1.body.tasks[i].id}/cancel`, {}));
    await page.waitForFunction(() => document.querySelector("#tasks-body td.state-cancelled"), null, { timeout: 30000 });
    await page.waitForFunction(() => [...document.querySelectorAll("#tasks-body td:nth-child(2)")].every((td) => td.textContent === "cancelled"), null, { timeout: 20000 });
    timings.list_reads_for_1000_changes = listRequests.length;
    if (listRequests.length > 100) throw new Error(`${listRequests.length} list reads for 1000 changes: updates are not batched`);
  });

  const longTasks = await page.evaluate(() => window.longTasks);
  timings.long_tasks = longTasks.length;
  timings.longest_task_ms = Math.round(Math.max(0, ...longTasks));
  writeFileSync(join(shots, "fleet-timings.json"), JSON.stringify(timings, null, 2));
  console.log(`timings ${JSON.stringify(timings)}`);
  if (problems.length) throw new Error(problems.join("\n"));
} finally {
  await browser.close();
}
