'use strict';
// node-redis v4 (installed as `redis4`, see package.json) as an application uses it:
// createClient({url}) with a client name, multi().set().incr().exec(), a runtime error inside
// EXEC, executeIsolated() with WATCH (a forced conflict, then a retry loop from several
// isolated connections on one counter), a blocking pop on an isolated connection woken by a
// push, and a subscriber made with client.duplicate(): subscribe(channel, listener),
// pSubscribe(pattern, listener), unsubscribe / pUnsubscribe.
// Usage: node node_redis_app.js PORT   -> one JSON line; exit 0 when the scenario ran to its end.

const {
  createClient, commandOptions, WatchError, MultiErrorReply,
} = require('redis4');
const { portArg, RUN, sleep, waitFor, run } = require('./common');

const port = portArg();
const tag = `{noderedis:${RUN}}`; // every key of the scenario in one slot
const k = (name) => `${tag}:${name}`;
const chan = (name) => `noderedis:${RUN}:${name}`;
const rel = (name) => name.split(`noderedis:${RUN}:`).join('');

const WORKERS = 5;
const INCREMENTS = 20;

async function transactions(obs, client) {
  await client.del([k('tx'), k('s')]);
  obs.multi = await client.multi().set(k('tx'), '1').incr(k('tx')).exec();
  try {
    obs.multi_runtime_error = await client.multi().set(k('s'), 'abc').incr(k('s'))
      .get(k('s')).exec();
  } catch (err) {
    // v4 rejects when a reply in the EXEC array is an error, with every reply attached
    if (!(err instanceof MultiErrorReply)) throw err;
    obs.multi_runtime_error = {
      replies: err.replies.map((r) => (r instanceof Error ? { error: r.message } : r)),
      errorIndexes: err.errorIndexes,
    };
  }
  obs.multi_runtime_error_value = await client.get(k('s'));
}

async function isolatedWatch(obs, client) {
  await client.set(k('watched'), 'v1');
  try {
    await client.executeIsolated(async (iso) => {
      await iso.watch(k('watched'));
      await client.set(k('watched'), 'v2'); // another connection changes it
      return iso.multi().set(k('watched'), 'mine').exec();
    });
    obs.watch_conflict = 'executed';
  } catch (err) {
    if (!(err instanceof WatchError)) throw err;
    obs.watch_conflict = 'WatchError';
  }
  obs.watch_conflict_value = await client.get(k('watched'));

  const counter = k('counter');
  await client.set(counter, '0');
  let conflicts = 0;
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    for (let i = 0; i < INCREMENTS; i += 1) {
      for (;;) {
        try {
          await client.executeIsolated(async (iso) => {
            await iso.watch(counter);
            const value = Number(await iso.get(counter));
            return iso.multi().set(counter, String(value + 1)).exec();
          });
          break;
        } catch (err) {
          if (!(err instanceof WatchError)) throw err;
          conflicts += 1;
        }
      }
    }
  }));
  obs.counter = Number(await client.get(counter));
  obs.counter_expected = WORKERS * INCREMENTS;
  obs.meta.watch_conflicts = conflicts;
}

async function isolatedBlockingPop(obs, client) {
  await client.del(k('jobs'));
  const popped = client.blPop(commandOptions({ isolated: true }), k('jobs'), 5);
  await sleep(200); // let it block (the result is awaited below)
  await client.rPush(k('jobs'), 'job-1');
  const got = await popped;
  obs.blpop = got && { key: got.key === k('jobs'), element: got.element };
}

async function subscriber(obs, client) {
  const sub = client.duplicate();
  sub.on('error', () => {});
  await sub.connect();
  const got = [];
  try {
    await sub.subscribe([chan('a'), chan('b')], (message, channel) =>
      got.push(['message', rel(channel), message]));
    await sub.pSubscribe(chan('news.*'), (message, channel) =>
      got.push(['pmessage', rel(channel), message]));
    const counts = [];
    const sent = [];
    for (let i = 0; i < 10; i += 1) {
      counts.push(await client.publish(chan('a'), `a${i}`));
      sent.push(['message', 'a', `a${i}`]);
      counts.push(await client.publish(chan('news.weather'), `n${i}`));
      sent.push(['pmessage', 'news.weather', `n${i}`]);
    }
    counts.push(await client.publish(chan('b'), 'b0'));
    sent.push(['message', 'b', 'b0']);
    await waitFor(() => got.length >= sent.length, 5000,
      `${sent.length} messages (got ${got.length})`);
    obs.publish_counts = counts;
    obs.received = got.slice();
    obs.received_as_sent = JSON.stringify(got) === JSON.stringify(sent);

    await sub.unsubscribe(chan('a'));
    obs.publish_after_unsubscribe = [await client.publish(chan('a'), 'gone'),
      await client.publish(chan('b'), 'b1'), await client.publish(chan('news.x'), 'n-x')];
    await waitFor(() => got.length >= sent.length + 2, 5000, 'the messages b1 and n-x');
    // by name: node-redis 4.7.1's pUnsubscribe() without arguments never resolves while the
    // connection still has channel subscriptions (a library bug, seen against redis-server)
    await sub.pUnsubscribe(chan('news.*'));
    await sub.unsubscribe(chan('b'));
    obs.publish_after_all_unsubscribed = [await client.publish(chan('b'), 'b2'),
      await client.publish(chan('news.x'), 'n-y')];
    await sleep(200); // nothing late may arrive
    obs.received_after = got.slice(sent.length);
    // out of subscriber mode, the duplicate takes ordinary commands again
    obs.duplicate_ping = await sub.ping();
  } finally {
    await sub.quit().catch(() => sub.disconnect());
  }
}

run(async (obs) => {
  const client = createClient({
    url: `redis://127.0.0.1:${port}`, name: 'node-redis-app',
    socket: { reconnectStrategy: false },
    // executeIsolated() takes connections from a generic-pool, one by default: allow a few so
    // that the WATCH loops really run side by side
    isolationPoolOptions: { min: 1, max: WORKERS },
  });
  client.on('error', () => {}); // surfaced through the rejected commands
  await client.connect();
  try {
    obs.client_getname = await client.clientGetName();
    obs.meta.step = 'transactions';
    await transactions(obs, client);
    obs.meta.step = 'isolatedWatch';
    await isolatedWatch(obs, client);
    obs.meta.step = 'isolatedBlockingPop';
    await isolatedBlockingPop(obs, client);
    obs.meta.step = 'subscriber';
    await subscriber(obs, client);
    obs.meta.step = 'done';
  } finally {
    await client.quit().catch(() => client.disconnect());
  }
});
