// The no-op workload on graphile-worker (PostgreSQL), as `muster bench`
// runs it on Muster: TASKS jobs queued one transaction each, SUBMITTERS at a
// time, while a worker with CONCURRENCY runs them. Prints one JSON line:
// jobs finished per second while queueing went on, and enqueue-to-start
// latency percentiles.
//
// usage: node run.cjs CONNECTION_STRING TASKS CONCURRENCY SUBMITTERS
"use strict";
const { run } = require("graphile-worker");
const { Pool } = require("pg");

const [connectionString, tasksArg, concurrencyArg, submittersArg] = process.argv.slice(2);
const tasks = Number(tasksArg);
const concurrency = Number(concurrencyArg);
const submitters = Number(submittersArg);
if (!connectionString || !(tasks > 0) || !(concurrency > 0) || !(submitters > 0)) {
  console.error("usage: node run.cjs CONNECTION_STRING TASKS CONCURRENCY SUBMITTERS");
  process.exit(2);
}

const now = () => performance.timeOrigin + performance.now();

async function main() {
  const latencies = [];
  const finishedAt = [];
  let resolveAll;
  const allDone = new Promise((r) => (resolveAll = r));
  // As many connections as the workload wants, but within what the server
  // allows (PostgreSQL's default is 100), keeping a few for others.
  const probe = new Pool({ connectionString, max: 1 });
  const allowed = Number((await probe.query("SHOW max_connections")).rows[0].max_connections);
  await probe.end();
  const pgPool = new Pool({ connectionString, max: Math.max(2, Math.min(concurrency + submitters + 4, allowed - 10)) });
  const runner = await run({
    pgPool,
    concurrency,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: new (require("graphile-worker").Logger)(() => () => {}),
    taskList: {
      noop: async (payload) => {
        latencies.push(now() - payload.t);
        finishedAt.push(now());
        if (finishedAt.length === tasks) resolveAll();
      },
    },
  });
  const began = now();
  let next = 0;
  async function submitter() {
    while (next < tasks) {
      next++;
      await pgPool.query("SELECT graphile_worker.add_job('noop', json_build_object('t', $1::float8))", [now()]);
    }
  }
  await Promise.all(Array.from({ length: submitters }, submitter));
  const submitted = now();
  await allDone;
  await runner.stop();
  await pgPool.end();
  const window = (submitted - began) / 1000;
  const inWindow = finishedAt.filter((t) => t <= submitted).length;
  latencies.sort((a, b) => a - b);
  const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  const version = require("graphile-worker/package.json").version;
  console.log(
    JSON.stringify({
      name: "graphile-worker",
      version,
      backend: "PostgreSQL " + (await serverVersion()),
      tasks,
      concurrency,
      jobs_per_sec: inWindow / window,
      p50_ms: q(0.5),
      p99_ms: q(0.99),
      p999_ms: q(0.999),
      max_ms: latencies[latencies.length - 1],
    }),
  );
}

async function serverVersion() {
  const pool = new Pool({ connectionString, max: 1 });
  const { rows } = await pool.query("SHOW server_version");
  await pool.end();
  return rows[0].server_version.split(" ")[0];
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
