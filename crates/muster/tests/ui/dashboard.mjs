// Drives the dashboard in Debian's Chromium through playwright-core. Run by
// the `dashboard` test in tests/it/ui.rs with HUB_URL, ADMIN_TOKEN,
// MUSTER_BIN, SHOTS (where the screenshots go) and PLAYWRIGHT (the module).
import { execFileSync, spawn } from "node:child_process";
import http from "node:http";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
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
let coder = null;
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
    await page.waitForSelector("#timeline .ev");
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
    await expectText("#admin-out", "Backed up to", 30000);
    await page.waitForSelector("#backups tr");
    await page.click("#check-now");
    await expectText("#admin-out", "found no problem");
  });

  await step("tasks-filtered-and-paged-on-the-server", async () => {
    // Tasks for a runner no agent offers stay queued; 60 of them make two pages of 50.
    const made = [];
    for (let i = 0; i < 60; i++) {
      const t = await api("POST", "/tasks", { prompt: `page filler ${i}`, runner: "codex", priority: "low" });
      made.push(t.body.task.id);
    }
    const needle = await api("POST", "/tasks", { prompt: "Find the NEEDLE in the parser", runner: "codex", priority: "urgent", capabilities: ["gpu"] });
    await page.goto(`${hub}/#/tasks`);
    await page.fill("#task-search", "needle");
    await page.click("#filter-apply");
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 1);
    await expectText("#tasks-body", needle.body.task.id);
    await page.goto(`${hub}/#/tasks?capability=gpu&priority=urgent`);
    await page.waitForFunction((id) => document.querySelector("#filter-capability").value === "gpu"
      && [...document.querySelectorAll("#tasks-body tr[data-task]")].map((r) => r.dataset.task).join() === id, needle.body.task.id);
    await page.goto(`${hub}/#/tasks?runner=codex&priority=low`);
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 50);
    await expectText("#tasks-body", made[59]);
    await page.click("#tasks-older");
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 10);
    await expectText("#tasks-body", made[0]);
    await expectText("#tasks-info", "page 2");
    await page.click("#tasks-newer");
    await page.waitForFunction(() => document.querySelectorAll("#tasks-body tr[data-task]").length === 50);
    for (const id of [...made, needle.body.task.id]) await api("POST", `/tasks/${id}/cancel`, {});
  });

  await step("task-page-shows-steps-diff-tokens-and-cost", async () => {
    // An agent whose `replay` runner prints a Claude Code stream, in a worktree of a real repository.
    const repo = join(scratch, "web");
    const git = (...args) => execFileSync("git", ["-C", repo, ...args], { stdio: "pipe" });
    execFileSync("git", ["init", "-q", "-b", "main", repo]);
    git("config", "user.name", "Test");
    git("config", "user.email", "test@example.com");
    writeFileSync(join(repo, "README.md"), "# Web\n");
    git("add", "README.md");
    git("commit", "-q", "-m", "first");
    const config = join(scratch, "coder.toml");
    writeFileSync(config, `[runners.replay]\nargv = ["bash", "{prompt_file}"]\nprompt = "file"\nformat = "claude"\n`
      + `[repos]\nweb = ${JSON.stringify(repo)}\n`);
    mkdirSync(join(scratch, "work"));
    const added = await api("POST", "/agents", { name: "coder" });
    coder = spawn(process.env.MUSTER_BIN, ["agent", "run", "--hub", hub, "--config", config, "--workdir", join(scratch, "work")], {
      env: { ...process.env, MUSTER_TOKEN: added.body.token, MUSTER_LOG: "warn" }, stdio: "inherit",
    });
    await page.goto(`${hub}/#/agents`);
    await page.waitForSelector('.agent[data-agent="coder"] .agent-state:text-is("idle")', { timeout: 20000 });
    const session = "5f0c7c1e-1111-4222-8333-944455556666";
    const stream = [
      { type: "system", subtype: "init", session_id: session, model: "claude-test-1", tools: ["Bash"] },
      { type: "assistant", session_id: session, message: { role: "assistant", content: [
        { type: "text", text: "Adding a usage line." },
        { type: "tool_use", id: "toolu_1", name: "Bash", input: { command: "make test" } }] } },
      { type: "user", session_id: session, message: { role: "user", content: [
        { type: "tool_result", tool_use_id: "toolu_1", content: "12 passed", is_error: false }] } },
      { type: "result", subtype: "success", is_error: false, num_turns: 2, session_id: session, result: "Added a usage line.",
        total_cost_usd: 0.0123, usage: { input_tokens: 1500, output_tokens: 230, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 } },
    ].map((l) => JSON.stringify(l)).join("\n");
    const prompt = `printf 'Usage: make\\n' >> README.md\ncat <<'STREAM'\n${stream}\nSTREAM\n`;
    const t = await api("POST", "/tasks", { prompt, runner: "replay", repo: "web" });
    if (t.status !== 201) throw new Error(JSON.stringify(t.body));
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-state", "succeeded", 30000);
    await expectText("#task-steps", "tool_use Bash: make test");
    await expectText("#task-steps", "Added a usage line.");
    await expectText("#task-attempts", "1730 tokens");
    await expectText("#task-attempts", "$0.0123");
    await expectText("#task-attempts", "claude-test-1");
    await expectText("#task-spent", "1730 tokens");
    await page.click("#task-diff summary");
    await expectText("#task-diff", "+Usage: make");
    await page.waitForSelector("#task-diff pre.diff span.add");
    await page.click("#task-transcript summary");
    await expectText("#task-transcript", '"total_cost_usd":0.0123');
  });

  await step("timeline-filtered-by-kind-and-task", async () => {
    await page.goto(`${hub}/#/timeline`);
    await page.fill("#tl-kind", "task.succeeded");
    await page.click("#tl-apply");
    // Only what the filter asks for, once the filtered list is drawn.
    const only = (test) => page.waitForFunction((t) => {
      const kinds = [...document.querySelectorAll("#timeline .ev .kind")].map((e) => e.textContent);
      return /\(all\)/.test(document.querySelector("#timeline-info").textContent) && kinds.length > 0
        && kinds.every((k) => new RegExp(t).test(k));
    }, test, { timeout: 15000 });
    await only("^task\\.succeeded$");
    // A family by its first word, and a live event arriving into the filtered list.
    await page.goto(`${hub}/#/timeline?kind=lock`);
    await only("^lock\\.");
    const bin = process.env.MUSTER_BIN;
    await api("POST", "/tasks", { prompt: `${bin} ctl lock live-arrival && ${bin} ctl unlock live-arrival`, runner: "shell" });
    await page.waitForSelector('#timeline .ev .detail:text-matches("live-arrival")', { timeout: 20000 });
    const done = await api("GET", "/tasks?state=succeeded&runner=replay&limit=1");
    const id = done.body.tasks[0].id;
    await page.goto(`${hub}/#/timeline?task=${id}`);
    await page.waitForSelector("#timeline .ev");
    const tasks = await page.$$eval("#timeline .ev a", (a) => [...new Set(a.map((e) => e.textContent))]);
    if (tasks.length !== 1 || tasks[0] !== id) throw new Error(`the task filter let through ${tasks}`);
    await expectText("#timeline", "task.step");
  });

  await step("reconnects-and-catches-up", async () => {
    await page.goto(`${hub}/#/timeline`);
    await page.waitForSelector("#timeline .ev");
    await expectText("#conn", "live");
    // Drop the socket as a network would; what happens meanwhile arrives once it is back.
    await page.evaluate(() => live.socket.close());
    await expectText("#conn", "reconnecting");
    const t = await api("POST", "/tasks", { prompt: "echo while the page was away", runner: "shell" });
    await expectText("#conn", "live");
    await page.waitForSelector(`#timeline .ev a:text-is("${t.body.task.id}")`);
    const created = await page.$$eval("#timeline .ev .kind", (k) => k.filter((e) => e.textContent === "task.created").length);
    const seqs = await page.$$eval("#timeline .ev", (r) => r.map((e) => e.dataset.seq));
    if (new Set(seqs).size !== seqs.length) throw new Error(`an event is shown twice after reconnecting: ${seqs}`);
    if (created < 1) throw new Error("the task created while away is missing");
  });

  await step("keyboard-and-dark-theme", async () => {
    await page.goto(`${hub}/#/overview`);
    await page.waitForSelector("#count-queued");
    await page.locator("body").press("g");
    await page.locator("body").press("t");
    await page.waitForSelector("#task-search");
    await page.locator("body").press("/");
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    if (focused !== "task-search") throw new Error(`/ focused ${focused}`);
    await page.keyboard.press("Escape");
    await page.locator("body").press("?");
    await page.waitForSelector("#keys:not([hidden])");
    await page.locator("body").press("?");
    const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.emulateMedia({ colorScheme: "light" });
    const light = await bg();
    await page.click("#theme"); // auto -> light
    await page.click("#theme"); // light -> dark
    const dark = await bg();
    if (light === dark) throw new Error(`the dark theme did not change the page (${light})`);
    await page.emulateMedia({ colorScheme: "dark" });
    await page.click("#theme"); // dark -> auto: follows the system, now dark
    if ((await bg()) !== dark) throw new Error("auto did not follow a dark system");
    await page.emulateMedia({ colorScheme: "light" });
  });

  await step("phone-answers-a-decision-and-acknowledges-an-alert", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const bin = process.env.MUSTER_BIN;
    const t = await api("POST", "/tasks", { prompt: `a=$(${bin} ctl ask 'Ship it?' --option ship --option wait) && echo "phone chose $a"`, runner: "shell" });
    await page.goto(`${hub}/#/decisions`);
    await page.waitForSelector('#decisions li button.answer:text-is("ship")', { timeout: 20000 });
    await page.click('#decisions li button.answer:text-is("ship")');
    await page.goto(`${hub}/#/tasks/${t.body.task.id}`);
    await expectText("#task-log", "phone chose ship");
    // A run silent for more than a second is stuck once the threshold is 1 s.
    const set = await api("PUT", "/config/alerts", { stuck_tasks: { threshold: 1 } });
    if (set.status !== 200) throw new Error(JSON.stringify(set));
    const silent = await api("POST", "/tasks", { prompt: "sleep 30", runner: "shell" });
    await page.goto(`${hub}/#/overview`);
    await page.waitForSelector('#alerts .alert[data-rule="stuck_tasks"] button.ack', { timeout: 20000 });
    await page.click('#alerts .alert[data-rule="stuck_tasks"] button.ack');
    await page.waitForSelector('#alerts .alert[data-rule="stuck_tasks"]', { state: "detached" });
    await api("POST", `/tasks/${silent.body.task.id}/cancel`, {});
    await api("PUT", "/config/alerts", { stuck_tasks: { threshold: 1800 } });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    if (overflow) throw new Error("the page is wider than a phone's screen");
  });

  await step("phone-sized-overview", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${hub}/#/overview`);
    await page.waitForSelector("#count-queued");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    if (overflow) throw new Error("the overview is wider than a phone's screen");
  });

  if (problems.length) throw new Error(problems.join("\n"));
  console.log(`passed ${passed}`);
} finally {
  if (agent) agent.kill("SIGTERM");
  if (coder) coder.kill("SIGTERM");
  await browser.close();
}
