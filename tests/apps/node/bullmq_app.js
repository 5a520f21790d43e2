'use strict';
// BullMQ (with ioredis, its default driver) as an application uses it, with the `{bull}` prefix
// that BullMQ documents for Redis Cluster (every key of a queue in one slot: its Lua scripts
// touch several keys). A Queue, a Worker (concurrency 5) and QueueEvents (XREAD BLOCK on the
// events stream): 50 jobs added in bulk, each processed once with its return value stored
// (job.returnvalue) and announced (worker and QueueEvents `completed`); a job that fails its
// first attempt and is retried; getWorkers() (CLIENT SETNAME / CLIENT LIST); then the worker
// idles a few seconds blocked on BZPOPMIN of the queue's marker key, a job is added, and it
// must be picked up at once (the push wakes the block). Warnings BullMQ prints (Redis version,
// eviction policy) and every `error` event are part of the observations.
// Usage: node bullmq_app.js PORT   -> one JSON line; exit 0 when the scenario ran to its end.

const { RUN, portArg, sleep, waitFor, errText, run } = require('./common');

const port = portArg();
const JOBS = 50;
const IDLE_MS = 3000;

// What BullMQ says on the console (its version and eviction-policy checks), kept in order.
const warnings = [];
for (const level of ['warn', 'error']) {
  console[level] = (...args) => warnings.push(`${level}: ${args.map(String).join(' ')}`);
}

const Redis = require('ioredis');
const { Queue, Worker, QueueEvents } = require('bullmq');

run(async (obs) => {
  const connection = { host: '127.0.0.1', port };
  const prefix = '{bull}';
  const name = `app-${RUN}`;
  const errors = [];
  const onError = (who) => (err) => errors.push(`${who}: ${errText(err)}`);

  const queue = new Queue(name, { connection, prefix });
  queue.on('error', onError('queue'));
  // from the start of the (new, empty) events stream: no event is missed however late its
  // first XREAD BLOCK is sent
  const events = new QueueEvents(name, { connection, prefix, lastEventId: '0-0' });
  events.on('error', onError('queueEvents'));
  const announced = new Map(); // jobId -> returnvalue, from QueueEvents
  events.on('completed', ({ jobId, returnvalue }) => announced.set(jobId, returnvalue));

  const attempts = new Map(); // job name -> attempts seen by the processor
  const completed = []; // [job name, returnvalue] in completion order, from the worker
  const failed = [];
  const worker = new Worker(name, async (job) => {
    attempts.set(job.name, (attempts.get(job.name) || 0) + 1);
    if (job.name === 'flaky' && job.attemptsMade === 0) throw new Error('first attempt fails');
    return { n: job.data.n, doubled: job.data.n * 2 };
  }, { connection, prefix, concurrency: 5, drainDelay: 5 });
  worker.on('error', onError('worker'));
  worker.on('completed', (job, value) => completed.push([job.name, value]));
  worker.on('failed', (job, err) => failed.push([job && job.name, err.message]));

  const step = (what) => { obs.meta.step = what; };
  try {
    step('waitUntilReady');
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady(),
      worker.waitUntilReady()]);

    step('addBulk');
    const jobs = await queue.addBulk(Array.from({ length: JOBS }, (_, n) => ({
      name: `double-${n}`, data: { n },
    })));
    obs.added = jobs.length;
    await waitFor(() => completed.length >= JOBS, 15000,
      `${JOBS} jobs completed (${completed.length} so far; errors ${JSON.stringify(errors)})`);
    step('returnvalues');
    const stored = await Promise.all(jobs.map((j) => queue.getJob(j.id)));
    obs.returnvalues_ok = stored.every((j, n) => j && j.returnvalue
      && j.returnvalue.doubled === 2 * n && j.finishedOn > 0);
    obs.processed_once = jobs.every((j) => attempts.get(j.name) === 1);
    obs.completed_names = completed.map(([jobName]) => jobName).sort();

    step('flaky');
    const flaky = await queue.add('flaky', { n: 100 }, { attempts: 2 });
    await waitFor(() => completed.length >= JOBS + 1, 10000, 'the retried job');
    const flakyDone = await queue.getJob(flaky.id);
    obs.flaky = {
      attempts: attempts.get('flaky'), attemptsMade: flakyDone.attemptsMade,
      returnvalue: flakyDone.returnvalue, failed_events: failed,
    };

    step('getWorkers');
    obs.workers = (await queue.getWorkers()).length;

    step('idle');
    // The worker now waits on BZPOPMIN (drainDelay 5 s): a job added while it blocks must
    // be taken at once, not at the next time-out.
    await sleep(IDLE_MS / 2);
    // the idle Worker in BZPOPMIN and QueueEvents in XREAD BLOCK: INFO counts them as blocked
    const probe = new Redis({ host: '127.0.0.1', port, retryStrategy: () => null });
    try {
      const info = await probe.info('clients');
      const blocked = Number((/blocked_clients:(\d+)/.exec(info) || [])[1]);
      obs.meta.blocked_clients_while_idle = blocked;
      obs.blocked_while_idle = blocked >= 2;
    } finally {
      probe.disconnect();
    }
    await sleep(IDLE_MS / 2);
    const before = completed.length;
    const t0 = Date.now();
    const late = await queue.add('after-idle', { n: 7 });
    await waitFor(() => completed.length > before, 10000, 'the job added after idling');
    const latency = Date.now() - t0;
    obs.meta.after_idle_latency_ms = latency;
    obs.after_idle_picked_up_promptly = latency < 2000;
    obs.after_idle_returnvalue = (await queue.getJob(late.id)).returnvalue;

    step('queueEvents');
    await waitFor(() => announced.size >= JOBS + 2, 5000,
      `QueueEvents 'completed' for every job (${announced.size} so far)`);
    obs.events_completed = announced.size;
    obs.events_returnvalues_ok = jobs.every((j, n) => {
      const value = announced.get(j.id);
      return value && value.doubled === 2 * n;
    });
    obs.counts = await queue.getJobCounts('waiting', 'active', 'completed', 'failed',
      'delayed');
    step('close');
  } finally {
    obs.errors = errors;
    obs.warnings = warnings;
    await worker.close().catch(onError('worker.close'));
    await queue.obliterate({ force: true }).catch(onError('queue.obliterate'));
    await events.close().catch(onError('queueEvents.close'));
    await queue.close().catch(onError('queue.close'));
  }
  if (errors.length) throw new Error(`BullMQ reported errors: ${errors.join(' | ')}`);
}, { deadlineMs: 40000 });
