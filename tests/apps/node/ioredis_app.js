'use strict';
// ioredis (the standalone client `new Redis({port})`, not Redis.Cluster), as an application
// uses it with its default options: a MULTI/EXEC transaction (with a runtime error inside it,
// and one aborted at queue time), an optimistic WATCH retry loop from several connections on
// one counter, a WATCH conflict, and a subscriber (SUBSCRIBE + PSUBSCRIBE, messages, PING in
// subscribed mode, UNSUBSCRIBE / PUNSUBSCRIBE, back to normal commands).
// Usage: node ioredis_app.js PORT   -> one JSON line; exit 0 when the scenario ran to its end.

const Redis = require('ioredis');
const { portArg, RUN, waitFor, run } = require('./common');

const port = portArg();
const tag = `{ioredis:${RUN}}`; // every key of the scenario in one slot (transactions need it)
const k = (name) => `${tag}:${name}`;
const chan = (name) => `ioredis:${RUN}:${name}`; // channels are not keys: no slot
const rel = (name) => name.split(`ioredis:${RUN}:`).join(''); // channel names without the run id

const CLIENTS = 5;
const INCREMENTS = 20;

function client(extra = {}) {
  // No reconnection: a dropped connection must show as an error, not be papered over.
  return new Redis({
    host: '127.0.0.1', port, connectionName: 'ioredis-app',
    retryStrategy: () => null, maxRetriesPerRequest: 1, ...extra,
  });
}

// ioredis's exec(): [[err, value], ...], or null when a WATCHed key changed.
const execResult = (res) => (res === null ? null
  : res.map(([err, value]) => (err ? { error: err.message } : value)));

async function transactions(obs, r) {
  await r.del(k('tx'), k('s'), k('q'));
  obs.multi = execResult(await r.multi().set(k('tx'), '1').incr(k('tx')).get(k('tx'))
    .exec());
  obs.multi_runtime_error = execResult(await r.multi().set(k('s'), 'abc').incr(k('s'))
    .get(k('s')).exec());
  try {
    // SET with one argument: refused at queue time, so EXEC answers EXECABORT
    await r.multi().set(k('q'), '1').set(k('q')).exec();
    obs.multi_queue_error = 'no error';
  } catch (err) {
    obs.multi_queue_error = {
      error: err.message,
      previous: (err.previousErrors || []).map((e) => e.message),
    };
  }
  obs.after_execabort_exists = await r.exists(k('q'));
}

async function watchConflict(obs, r) {
  const w = client();
  try {
    await r.set(k('watched'), 'v1');
    await w.watch(k('watched'));
    await r.set(k('watched'), 'v2'); // another client changes it
    obs.watch_conflict_exec = execResult(await w.multi().set(k('watched'), 'mine').exec());
    obs.watch_conflict_value = await r.get(k('watched'));
    await w.watch(k('watched'));
    obs.watch_clean_exec = execResult(await w.multi().set(k('watched'), 'mine').exec());
    obs.watch_clean_value = await r.get(k('watched'));
  } finally {
    w.disconnect();
  }
}

async function watchRetryLoop(obs, r) {
  const counter = k('counter');
  await r.set(counter, '0');
  const clients = Array.from({ length: CLIENTS }, () => client());
  let conflicts = 0;
  try {
    await Promise.all(clients.map(async (c) => {
      for (let i = 0; i < INCREMENTS; i += 1) {
        for (;;) {
          await c.watch(counter);
          const value = Number(await c.get(counter));
          const res = await c.multi().set(counter, String(value + 1)).exec();
          if (res !== null) break;
          conflicts += 1;
        }
      }
    }));
  } finally {
    clients.forEach((c) => c.disconnect());
  }
  obs.counter = Number(await r.get(counter));
  obs.counter_expected = CLIENTS * INCREMENTS;
  obs.meta.watch_conflicts = conflicts;
}

async function subscriber(obs, r) {
  const sub = client();
  const got = [];
  sub.on('message', (channel, message) => got.push(['message', rel(channel), message]));
  sub.on('pmessage', (pattern, channel, message) =>
    got.push(['pmessage', rel(pattern), rel(channel), message]));
  try {
    obs.subscribe = await sub.subscribe(chan('a'), chan('b'));
    obs.psubscribe = await sub.psubscribe(chan('news.*'));
    const pong = await sub.ping();
    obs.meta.ping_in_subscribed_mode = pong; // its shape depends on RESP2 / RESP3
    obs.ping_in_subscribed_mode_ok = JSON.stringify(pong).toLowerCase().includes('pong');

    const publishCounts = [];
    const sent = [];
    for (let i = 0; i < 10; i += 1) {
      publishCounts.push(await r.publish(chan('a'), `a${i}`));
      sent.push(['message', 'a', `a${i}`]);
      publishCounts.push(await r.publish(chan('news.sport'), `n${i}`));
      sent.push(['pmessage', 'news.*', 'news.sport', `n${i}`]);
    }
    publishCounts.push(await r.publish(chan('b'), 'b0'));
    sent.push(['message', 'b', 'b0']);
    publishCounts.push(await r.publish(chan('nobody'), 'lost'));
    await waitFor(() => got.length >= sent.length, 5000,
      `${sent.length} messages (got ${got.length})`);
    obs.publish_counts = publishCounts;
    obs.received = got.slice();
    obs.received_as_sent = JSON.stringify(got) === JSON.stringify(sent);

    obs.unsubscribe_a = await sub.unsubscribe(chan('a'));
    obs.publish_after_unsubscribe = [await r.publish(chan('a'), 'gone'),
      await r.publish(chan('b'), 'b1')];
    await waitFor(() => got.length >= sent.length + 1, 5000, 'the message b1');
    obs.punsubscribe = await sub.punsubscribe();
    obs.unsubscribe_all = await sub.unsubscribe();
    // with no subscription left the connection takes ordinary commands again
    await sub.set(k('after-sub'), 'ok');
    obs.after_unsubscribe_get = await sub.get(k('after-sub'));
    await new Promise((resolve) => setTimeout(resolve, 200)); // nothing late may arrive
    obs.received_after = got.slice(sent.length);
  } finally {
    sub.disconnect();
  }
}

run(async (obs) => {
  const r = client();
  r.on('error', () => {}); // surfaced through the rejected commands
  try {
    await r.ping();
    obs.meta.protocol = r.condition && r.condition.protocol; // 3 on Redis 7, 2 after NOPROTO
    obs.client_getname = await r.client('GETNAME');
    obs.meta.step = 'transactions';
    await transactions(obs, r);
    obs.meta.step = 'watchConflict';
    await watchConflict(obs, r);
    obs.meta.step = 'watchRetryLoop';
    await watchRetryLoop(obs, r);
    obs.meta.step = 'subscriber';
    await subscriber(obs, r);
    obs.meta.step = 'done';
  } finally {
    r.disconnect();
  }
});

