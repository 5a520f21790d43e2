'use strict';
// Shared by the application scripts: argument parsing, a run id for unique key and channel
// names (left out of the observations, so that two runs compare equal), polling, and the one
// JSON line each script prints. Exit status 0 only when the scenario ran to its end.

const crypto = require('crypto');

function portArg() {
  const port = Number(process.argv[2]);
  if (!Number.isInteger(port) || port <= 0) {
    process.stderr.write(`usage: node ${process.argv[1]} PORT\n`);
    process.exit(2);
  }
  return port;
}

const RUN = crypto.randomBytes(5).toString('hex');

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

function errText(err) {
  if (err === null || err === undefined) return null;
  return `${err.name || 'Error'}: ${err.message || String(err)}`;
}

// Runs main(obs) under a hard deadline; prints {"ok": true|false, ...obs, "error": ...} on one
// line. `obs.meta` holds what is reported but not compared (protocol, timings, conflicts).
function run(main, { deadlineMs = 25000 } = {}) {
  const obs = { meta: {} };
  let printed = false;
  const finish = (ok, err) => {
    if (printed) return;
    printed = true;
    const out = { ok, ...obs };
    if (err) {
      out.error = errText(err);
      out.stack = (err && err.stack) || null;
    }
    process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(ok ? 0 : 1));
  };
  const timer = setTimeout(() => finish(false, new Error(`scenario did not end within ${deadlineMs} ms`)), deadlineMs);
  process.on('unhandledRejection', (err) => finish(false, err));
  process.on('uncaughtException', (err) => finish(false, err));
  main(obs).then(() => finish(true), (err) => finish(false, err));
}

module.exports = { portArg, RUN, sleep, waitFor, errText, run };
