// Drives the dashboard in Debian's Chromium through playwright-core. Run by
// the `dashboard` test in tests/it/ui.rs with HUB_URL, ADMIN_TOKEN,
// MUSTER_BIN, SHOTS (where the screenshots go) and PLAYWRIGHT (the module).
import { spawn } from "node:child_process";
import http from "node:http";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { chromium } = await import(process.env.PLAYWRIGHT);
const hub = process.env.HUB_URL;
const admin = process.env.ADMIN_TOKEN;
const shots = process.env.SHOTS;
const scratch = mkdtempSync(join(tmpdir(), "muster-ui-"));

const api = async (method, path, body, headers = {}) => {
  const r = await fetch(`${hub}/api/v1${path}`, {
    method, headers: { authorization: `Bearer ${admin}`, "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 850 } });
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
let agent = null;
let passed = 0;

async function step(name, body) {
  try {
    await body();
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
    console.log(`ok ${name}`);
    passed += 1;
  } catch (e) {
    await page.screenshot({ path: join(shots, `${name}-FAILED.png`), fullPage: true }).catch(() => {});
    console.log(`FAILED ${name}: ${e.stack || e}`);
    throw e;
  }
}

const expectText = async (selector, text, timeout = 15000) => {
  await page.waitForFunction(([s, t]) => {
    const e = document.querySelector(s);
    return e && e.textContent.includes(t);
  }, [selector, text], { timeout });
};

try {
  await page.goto(hub);

  await step("bad-token-refused", async () => {
    await page.fill("#token", "mst_this_is_not_a_token");
    await page.click("#signin-submit");
    await expectText("#signin-error", "not valid");
    if (!(await page.isHidden("#top"))) throw new Error("the console opened for a bad token");
  });

  await step("signed-in", async () => {
    await page.fill("#token", admin);
    await page.click("#signin-submit");
    await page.waitForSelector("#top:not([hidden])");
    await expectText("#conn", "live");
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === "muster_session");
    if (!session || !session.httpOnly || session.sameSite !== "Strict") {
      throw new Error(`the session cookie must be HttpOnly and SameSite=Strict: ${JSON.stringify(session)}`);
    }
    const readable = await page.evaluate(() => document.cookie);
    if (readable.includes("muster_session")) throw new Error("the page's script can read the session");
  });

  await step("agent-appears-live", async () => {
    await page.click('#nav a[href="#/agents"]');
    await page.waitForSelector("#agents", { state: "attached" });
    const added = await api("POST", "/agents", { name: "ui-agent" });
    agent = spawn(process.env.MUSTER_BIN, ["agent", "run", "--hub", hub, "--runner", "shell", "--slots", "2"], {
      env: { ...process.env, MUSTER_TOKEN: added.body.token, MUSTER_LOG: "warn" }, stdio: "inherit",
    });
    // No reload: the row arrives with the agent's events.
    await page.waitForSelector('.agent[data-agent="ui-agent"] .agent-state:text-is("idle")', { timeout: 20000 });
  });

  await step("task-from-form-streams-its-log", async () => {
    await page.click('#nav a[href="#/tasks"]');
    await page.fill("#task-prompt", "echo hello from the dashboard; sleep 0.5; echo second line");
    await page.fill("#task-runner", "shell");
    await page.click("#task-submit");
    await page.waitForSelector("#task-log");
    await expectText("#task-log", "hello from the dashboard");
    await expectText("#task-log", "second line");
    await expectText("#task-state", "succeeded");
  });

  await step("cancel-from-the-page", async () => {
    const t = await api("POST", "/tasks", { prompt: "echo waiting; sleep 60", runner: "shell" });
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-state", "running");
    await page.click("#task-cancel");
    await expectText("#task-state", "cancelled");
  });

  await step("retry-from-the-page", async () => {
    const marker = join(scratch, "second-time");
    const script = `if [ -e ${marker} ]; then echo worked the second time; else touch ${marker}; exit 3; fi`;
    const t = await api("POST", "/tasks", { prompt: script, runner: "shell", max_attempts: 1 });
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-state", "failed");
    await page.click("#task-retry");
    await expectText("#task-state", "succeeded");
    await expectText("#task-log", "worked the second time");
  });

  await step("alert-acknowledged-from-the-banner", async () => {
    // One failed run in the last hour is enough once the threshold is 1.
    const set = await api("PUT", "/config/alerts", { high_error_rate: { threshold: 1 } });
    if (set.status !== 200) throw new Error(JSON.stringify(set));
    await page.goto(`${hub}/#/overview`);
    await page.waitForSelector('#alerts .alert[data-rule="high_error_rate"]', { timeout: 20000 });
    await page.click('#alerts .alert[data-rule="high_error_rate"] button.ack');
    await page.waitForSelector('#alerts .alert[data-rule="high_error_rate"]', { state: "detached" });
    const alerts = await api("GET", "/alerts");
    const rule = alerts.body.find((a) => a.rule === "high_error_rate");
    if (rule.state !== "acknowledged") throw new Error(JSON.stringify(rule));
  });

  await step("markup-in-output-is-text", async () => {
    const markup = `<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>`;
    writeFileSync(join(scratch, "markup.txt"), markup);
    const t = await api("POST", "/tasks", { prompt: `cat ${join(scratch, "markup.txt")}`, runner: "shell" });
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-state", "succeeded");
    await expectText("#task-log", "<script>window.pwned = 1</script>");
    const elements = await page.evaluate(() => document.querySelectorAll("#task-log *").length);
    const pwned = await page.evaluate(() => window.pwned);
    if (elements !== 0 || pwned !== undefined) throw new Error(`markup was interpreted: ${elements} elements, pwned=${pwned}`);
  });

  await step("other-origin-refused", async () => {
    const cookie = (await page.context().cookies()).find((c) => c.name === "muster_session");
    const headers = { cookie: `muster_session=${cookie.value}`, "content-type": "application/json" };
    const forged = await fetch(`${hub}/api/v1/tasks`, {
      method: "POST", headers: { ...headers, origin: "http://evil.example" },
      body: JSON.stringify({ prompt: "echo forged", runner: "shell" }),
    });
    if (forged.status !== 403) throw new Error(`a cross-origin POST got ${forged.status}`);
    const socket = await new Promise((resolve, reject) => {
      const req = http.request(`${hub}/api/v1/events/live`, {
        headers: { cookie: headers.cookie, origin: "http://evil.example", connection: "Upgrade", upgrade: "websocket",
                   "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
      });
      req.on("response", (r) => { r.resume(); resolve(r.statusCode); });
      req.on("upgrade", (r, sock) => { sock.destroy(); resolve(r.statusCode); });
      req.on("error", reject);
      req.end();
    });
    if (socket !== 403) throw new Error(`a cross-origin socket got ${socket}`);
    const same = await page.evaluate(async () => {
      const r = await fetch("/api/v1/tasks?limit=1");
      return r.status;
    });
    if (same !== 200) throw new Error(`the page's own request got ${same}`);
    const tasks = await api("GET", "/tasks?limit=100");
    if (tasks.body.tasks.some((t) => t.prompt === "echo forged")) throw new Error("the forged task was created");
    await page.goto(`${hub}/#/timeline`);
    await page.waitForSelector("#timeline tr");
  });

  await step("agent-paused-and-resumed-from-its-card", async () => {
    await page.goto(`${hub}/#/agents`);
    await page.click('.agent[data-agent="ui-agent"] button.agent-pause');
    await page.waitForSelector('.agent[data-agent="ui-agent"] .agent-state:text-is("paused")');
    await page.click('.agent[data-agent="ui-agent"] button.agent-resume');
    await page.waitForSelector('.agent[data-agent="ui-agent"] .agent-state:text-is("idle")');
  });

  await step("decision-answered-from-the-inbox", async () => {
    const bin = process.env.MUSTER_BIN;
    const t = await api("POST", "/tasks", { prompt: `a=$(${bin} ctl ask 'Deploy now?' --option deploy --option hold) && echo "chose $a"`, runner: "shell" });
    await page.goto(`${hub}/#/decisions`);
    await page.waitForSelector('#decisions li button.answer:text-is("deploy")', { timeout: 20000 });
    await page.click('#decisions li button.answer:text-is("deploy")');
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-log", "chose deploy");
  });

  await step("lock-forced-free-from-the-page", async () => {
    const gate = join(scratch, "holder-done");
    const bin = process.env.MUSTER_BIN;
    await api("POST", "/tasks", { prompt: `${bin} ctl lock deploy:staging && while [ ! -e ${gate} ]; do sleep 0.1; done`, runner: "shell" });
    await page.goto(`${hub}/#/locks`);
    await page.waitForSelector('#locks tr[data-lock="deploy:staging"]', { timeout: 20000 });
    page.once("dialog", (d) => d.accept());
    await page.click('#locks tr[data-lock="deploy:staging"] button.unlock');
    await page.waitForSelector('#locks tr[data-lock="deploy:staging"]', { state: "detached" });
    writeFileSync(gate, "");
  });

  await step("metrics-charts-of-the-last-hour", async () => {
    await page.goto(`${hub}/#/metrics`);
    const line = '#charts figure[data-chart="Queue depth"] svg polyline.series.a';
    await page.waitForSelector(line, { state: "attached" });
    const count = () => page.$eval(line, (l) => l.getAttribute("points").split(" ").filter(Boolean).length);
    const before = await count();
    // The hub samples every 500 ms here; the new points come over the socket, without a reload.
    await page.waitForFunction(([sel, n]) => {
      const l = document.querySelector(sel);
      return l && l.getAttribute("points").split(" ").filter(Boolean).length >= n + 2;
    }, [line, before], { timeout: 20000 });
    for (const name of ["Throughput (runs/s)", "Queue wait", "Failure rate", "Utilization", "Cost"]) {
      await page.waitForSelector(`#charts figure[data-chart="${name}"] svg`);
    }
    const box = await page.locator('#charts figure[data-chart="Queue depth"] svg').boundingBox();
    await page.mouse.move(box.x + box.width * 0.9, box.y + box.height / 2);
    await expectText('#charts figure[data-chart="Queue depth"] .readout', "queued");
  });

  await step("admin-backs-up-from-the-page", async () => {
    await page.goto(`${hub}/#/admin`);
    await page.click("#backup-now");
    await expectText("#admin-out", ".db", 30000);
    await page.waitForSelector("#backups tr");
  });

  await step("phone-sized-overview", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${hub}/#/overview`);
    await page.waitForSelector("#count-queued");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    if (overflow) throw new Error("the overview is wider than a phone's screen");
    await page.setViewportSize({ width: 1200, height: 850 });
  });

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(`passed ${passed}`);
} finally {
  if (agent) agent.kill("SIGTERM");
  await browser.close();
}
