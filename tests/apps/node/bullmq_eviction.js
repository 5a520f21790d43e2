'use strict';
// BullMQ's start-up check of the server: it reads INFO for redis_version (and refuses a Redis
// older than it supports) and for maxmemory_policy, and warns when the policy is not
// "noeviction" (an evicting Redis loses jobs). The test sets allkeys-lru on the server(s)
// first; this script opens a Queue and reports what BullMQ said about it.
// Usage: node bullmq_eviction.js PORT   -> one JSON line; exit 0 when the scenario ran to its end.

const { RUN, portArg, run } = require('./common');

const port = portArg();
const warnings = [];
for (const level of ['warn', 'error']) {
  console[level] = (...args) => warnings.push(`${level}: ${args.map(String).join(' ')}`);
}

const Redis = require('ioredis');
const { Queue } = require('bullmq');

run(async (obs) => {
  const queue = new Queue(`eviction-${RUN}`, { connection: { host: '127.0.0.1', port },
    prefix: '{bull}' });
  const errors = [];
  queue.on('error', (err) => errors.push(`${err.name}: ${err.message}`));
  try {
    await queue.waitUntilReady();
  } finally {
    await queue.close();
  }
  obs.warnings = warnings;
  obs.errors = errors;
  const client = new Redis({ host: '127.0.0.1', port, retryStrategy: () => null });
  try {
    const info = await client.info();
    // the INFO fields BullMQ reads, as the server (or the proxy) gives them
    obs.info_fields = info.split(/\r?\n/)
      .filter((line) => /^(redis_version|maxmemory_policy):/.test(line))
      .map((line) => line.split(':')[0]);
    obs.config_get = await client.config('GET', 'maxmemory-policy');
  } finally {
    client.disconnect();
  }
});
