// A web-tier publisher and a worker written with Node's amqplib (its promise API), printing
// one JSON object per line: what the client saw, for tests/interop/test_node_amqplib.py to
// compare with what it sees against RabbitMQ 3.10.
//
// usage: node interop.js URL PREFIX scenario   (the full publisher/worker run)
//        node interop.js URL PREFIX blocked    (waits for "publish" on stdin, during an alarm)
// amqplib is found through NODE_PATH (the test points it at .ci's npm install).
'use strict';

const amqp = require('amqplib');
const crypto = require('crypto');
const readline = require('readline');

const TIMEOUT_MS = 30000;

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ ...(fields || {}), event }) + '\n');
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing in ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A decoded field value as amqplib hands it over (numbers are numbers, whatever the wire type).
function norm(v) {
  if (v === null) return { type: 'null', value: null };
  if (Buffer.isBuffer(v)) return { type: 'Buffer', value: v.toString('hex') };
  if (Array.isArray(v)) return { type: 'array', value: v.map(norm) };
  if (typeof v === 'object') {
    if (Object.hasOwn(v, '!')) return { type: v['!'], value: v.value };
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = norm(v[k]);
    return { type: 'object', value: out };
  }
  return { type: typeof v, value: v };
}

function delivery(msg) {
  return {
    exchange: msg.fields.exchange, routing_key: msg.fields.routingKey,
    redelivered: msg.fields.redelivered, body: msg.content.toString('utf8'),
  };
}

// Deliveries of a consumer, taken one at a time.
function inbox() {
  const waiting = [];
  const ready = [];
  return {
    push(msg) {
      if (waiting.length) waiting.shift()(msg);
      else ready.push(msg);
    },
    next() {
      if (ready.length) return Promise.resolve(ready.shift());
      return within(new Promise((resolve) => waiting.push(resolve)), 'delivery');
    },
  };
}

function withHeartbeat(url) {
  const u = new URL(url);
  u.searchParams.set('heartbeat', '1'); // both sides must keep an idle connection alive
  return u.toString();
}

async function scenario(url, prefix) {
  const user = decodeURIComponent(new URL(url).username || 'guest');
  const conn = await amqp.connect(withHeartbeat(url));
  const c = conn.connection;
  const caps = c.serverProperties.capabilities || {};
  emit('connected', {
    heartbeat: c.heartbeat, frame_max: c.frameMax, channel_max: c.channelMax,
    capabilities: Object.keys(caps).filter((k) => caps[k] === true).sort(),
  });
  const closed = new Promise((resolve) => conn.on('close', (err) => resolve(err)));
  const ch = await conn.createConfirmChannel();

  const exchange = `${prefix}-x`;
  const queue = `${prefix}-q`;
  await ch.assertExchange(exchange, 'direct', { durable: true });
  const ok = await ch.assertQueue(queue, { durable: true });
  emit('queue.declare-ok', { queue: ok.queue, messages: ok.messageCount, consumers: ok.consumerCount });
  await ch.bindQueue(queue, exchange, 'task');

  // A persistent message with every property and a header of each type amqplib writes.
  const headers = {
    string: 'h\u00e9llo',
    byte: -8,
    short: 300,
    int: -70000,
    long: 2 ** 40,
    double: 1.5,
    bool: true,
    float: { '!': 'float', value: 0.25 },
    unsignedint: { '!': 'uint32', value: 4000000000 },
    timestamp: { '!': 'timestamp', value: 1700000000 },
    decimal: { '!': 'decimal', value: { places: 2, digits: 12345 } },
    bytes: Buffer.from([0, 1, 254]),
    void: null,
    array: ['a', 1, true, { in: 'array' }, [2]],
    nested: { level: 1, deeper: { level: 2, list: [3, 'x'] } },
  };
  const confirmed = (publish) => within(new Promise((resolve) => publish((err) => resolve(!err))), 'confirm');
  const ack1 = await confirmed((cb) => ch.publish(exchange, 'task', Buffer.from('{"photo": 1}'), {
    persistent: true, contentType: 'application/json', contentEncoding: 'utf-8', headers,
    priority: 5, correlationId: 'corr-1', replyTo: 'replies', expiration: '600000',
    messageId: 'msg-1', timestamp: 1700000001, type: 'photo.uploaded', userId: user, appId: 'web',
  }, cb));
  emit('confirm', { ack: ack1 });

  const got = await ch.get(queue, { noAck: false });
  const p = got.properties;
  emit('get', {
    ...delivery(got), message_count: got.fields.messageCount, delivery_tag: got.fields.deliveryTag,
    properties: {
      content_type: p.contentType, content_encoding: p.contentEncoding, delivery_mode: p.deliveryMode,
      priority: p.priority, correlation_id: p.correlationId, reply_to: p.replyTo,
      expiration: p.expiration, message_id: p.messageId, timestamp: p.timestamp, type: p.type,
      user_id: p.userId === user, app_id: p.appId,
    },
    headers: norm(p.headers),
  });
  ch.ack(got);
  emit('get-empty', { empty: (await ch.get(queue, { noAck: false })) === false });

  // A worker: prefetch 2, manual acks, a nack with requeue comes back redelivered.
  for (const body of ['m1', 'm2', 'm3']) {
    ch.publish(exchange, 'task', Buffer.from(body), { persistent: true });
  }
  await within(ch.waitForConfirms(), 'confirms');
  emit('confirmed', { count: 3 });
  await ch.prefetch(2);
  const box = inbox();
  await ch.consume(queue, (msg) => box.push(msg), { noAck: false, consumerTag: 'worker' });
  const first = await box.next();
  const second = await box.next();
  emit('deliver', delivery(first));
  emit('deliver', delivery(second));
  const probe = await conn.createChannel();
  const held = await probe.checkQueue(queue);
  emit('held-back', { messages: held.messageCount, consumers: held.consumerCount });
  ch.nack(first, false, true);
  const again = await box.next();
  emit('deliver', delivery(again));
  ch.ack(second);
  const third = await box.next();
  emit('deliver', delivery(third));
  ch.ack(third, true); // multiple: acks the redelivery too
  const cancelOk = await ch.cancel('worker');
  emit('cancelled', { tag: cancelOk.consumerTag });

  // A message larger than frame_max travels in many body frames.
  const big = Buffer.alloc(2 ** 20 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
  emit('confirm', { ack: await confirmed((cb) => ch.publish(exchange, 'task', big, { persistent: true }, cb)) });
  const large = await ch.get(queue, { noAck: true });
  const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
  emit('large', { size: large.content.length, intact: sha(large.content) === sha(big) });

  // A channel error: the server closes the channel, the connection stays.
  const errCh = await conn.createChannel();
  const errEvent = new Promise((resolve) => errCh.on('error', resolve));
  const closeEvent = new Promise((resolve) => errCh.on('close', () => resolve(true)));
  try {
    await errCh.checkQueue(`${prefix}-missing`);
    emit('no-error');
  } catch (e) {
    emit('channel-error', { code: e.code, class_id: e.classId, method_id: e.methodId, message: e.message });
  }
  const ev = await within(errEvent, 'channel error event');
  emit('channel-error-event', { code: ev.code, message: ev.message });
  emit('channel-closed', { closed: await within(closeEvent, 'channel close event') });
  try {
    await errCh.checkQueue(queue);
    emit('no-error');
  } catch (e) {
    emit('after-error', { name: e.name, message: e.message.split('\n')[0] });
  }
  const alive = await probe.checkQueue(queue);
  emit('connection-alive', { messages: alive.messageCount });

  // Idle for several heartbeat intervals: heartbeats keep the connection open.
  await new Promise((resolve) => setTimeout(resolve, 3500));
  await probe.checkQueue(queue);
  emit('after-idle', { ok: true });

  const deleted = await ch.deleteQueue(queue);
  emit('queue.delete-ok', { messages: deleted.messageCount });
  await ch.deleteExchange(exchange);
  await conn.close();
  emit('closed', { error: (await within(closed, 'close event')) !== undefined });
}

// Normalise what differs run to run: timestamps keep only their type.
function shape(v) {
  const n = norm(v);
  const strip = (x) => {
    if (x.type === 'timestamp') return { type: 'timestamp' };
    if (x.type === 'array') return { type: 'array', value: x.value.map(strip) };
    if (x.type === 'object') {
      const out = {};
      for (const k of Object.keys(x.value)) out[k] = strip(x.value[k]);
      return { type: 'object', value: out };
    }
    return x;
  };
  return strip(n);
}

async function closeOf(conn, event, op) {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  try {
    await op(ch);
    await ch.checkQueue('amq.rabbitmq.reply-to').catch(() => {});
    emit(event, { error: null });
  } catch (e) {
    const message = e.message.replace(/amq\.gen-[A-Za-z0-9_-]{22}/g, 'amq.gen-(server-named)');
    emit(event, { code: e.code, class_id: e.classId, method_id: e.methodId, message });
  }
}

async function edges(url, prefix) {
  const u = new URL(url);
  u.searchParams.set('frameMax', '4096');
  const conn = await amqp.connect(u.toString());
  emit('tuned', { frame_max: conn.connection.frameMax });
  const ch = await conn.createConfirmChannel();
  const q = `${prefix}-e`;
  await ch.assertQueue(q, { durable: false });
  const body = Buffer.alloc(200000);
  for (let i = 0; i < body.length; i++) body[i] = i % 241;
  ch.sendToQueue(q, body, {});
  await ch.waitForConfirms();
  const got = await ch.get(q, { noAck: true });
  emit('small-frames', { intact: Buffer.compare(got.content, body) === 0 });

  const named = await ch.assertQueue('', { exclusive: true });
  emit('server-named', { ok: /^amq\.gen-[A-Za-z0-9_-]{22}$/.test(named.queue) });

  // An alternate exchange takes what the main exchange cannot route: no basic.return.
  const ax = `${prefix}-ax`, mx = `${prefix}-mx`, aq = `${prefix}-aq`;
  await ch.assertExchange(ax, 'fanout', { autoDelete: true });
  await ch.assertExchange(mx, 'direct', { autoDelete: true, alternateExchange: ax });
  await ch.assertQueue(aq, { exclusive: true });
  await ch.bindQueue(aq, ax, '');
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  ch.publish(mx, 'nowhere', Buffer.from('to the alternate'), { mandatory: true });
  ch.publish('', `${prefix}-none`, Buffer.from('back'), { mandatory: true, messageId: 'r-1' });
  await ch.waitForConfirms();
  const alt = await ch.get(aq, { noAck: true });
  emit('alternate', { body: alt.content.toString(), routing_key: alt.fields.routingKey, exchange: alt.fields.exchange === mx });
  emit('returned', { count: returned.length, code: returned[0].fields.replyCode, text: returned[0].fields.replyText,
    message_id: returned[0].properties.messageId, body: returned[0].content.toString() });

  // Dead-lettering: a rejected and an expired message, with RabbitMQ's x-death.
  const dq = `${prefix}-dq`, wq = `${prefix}-wq`;
  await ch.assertQueue(dq, { exclusive: true });
  await ch.assertQueue(wq, { exclusive: true, deadLetterExchange: '', deadLetterRoutingKey: dq });
  ch.sendToQueue(wq, Buffer.from('rejected'), { headers: { kept: 1 } });
  await ch.waitForConfirms();
  const w = await ch.get(wq, { noAck: false });
  ch.reject(w, false);
  ch.sendToQueue(wq, Buffer.from('expired'), { expiration: '0' });
  await ch.waitForConfirms();
  for (const what of ['rejected', 'expired']) {
    let d = false;
    for (let i = 0; i < 200 && d === false; i++) d = await ch.get(dq, { noAck: true }); // round trips
    emit('dead-lettered', { body: d && d.content.toString(), expiration: d && d.properties.expiration,
      headers: d && shape(d.properties.headers) });
  }

  // A burst of publishes honouring write back-pressure, then a consumer with prefetch 50.
  const n = 3000;
  for (let i = 0; i < n; i++) {
    if (!ch.sendToQueue(q, Buffer.from(String(i)), {})) await new Promise((r) => ch.once('drain', r));
  }
  await within(ch.waitForConfirms(), 'burst confirms');
  await ch.prefetch(50);
  let seen = 0, inOrder = true;
  await within(new Promise((resolve) => {
    ch.consume(q, (m) => {
      if (m.content.toString() !== String(seen)) inOrder = false;
      seen++;
      ch.ack(m);
      if (seen === n) resolve();
    }, { consumerTag: 'burst' });
  }), 'burst deliveries');
  await ch.cancel('burst');
  emit('burst', { delivered: seen, in_order: inOrder });

  // The server cancels a consumer whose queue is deleted: the callback gets null.
  const cq = `${prefix}-cq`;
  await ch.assertQueue(cq, {});
  const cancelled = new Promise((resolve) => ch.consume(cq, (m) => { if (m === null) resolve(true); }, { consumerTag: 'doomed' }));
  await ch.deleteQueue(cq);
  emit('consumer-cancelled', { got_null: await within(cancelled, 'basic.cancel') });

  emit('purge', { messages: (await ch.purgeQueue(q)).messageCount });
  await conn.updateSecret(Buffer.from(decodeURIComponent(u.password || 'guest')), 'rotation');
  emit('update-secret', { ok: true });

  await closeOf(conn, 'delete-if-empty', async (c) => {
    await c.sendToQueue(q, Buffer.from('x'));
    await c.deleteQueue(q, { ifEmpty: true });
  });
  await closeOf(conn, 'check-exchange-missing', (c) => c.checkExchange(`${prefix}-nox`));
  await closeOf(conn, 'unbind-missing-queue', (c) => c.unbindQueue(`${prefix}-noq`, 'amq.direct', 'k'));
  await closeOf(conn, 'exclusive-other-connection', async () => {
    const other = await amqp.connect(url);
    const oc = await other.createChannel();
    oc.on('error', () => {});
    try {
      await oc.checkQueue(named.queue);
    } finally {
      await other.close().catch(() => {});
    }
  });
  await closeOf(conn, 'bad-x-max-priority', (c) => c.assertQueue(`${prefix}-pr`, { maxPriority: 300 }));
  await closeOf(conn, 'bad-overflow', (c) => c.assertQueue(`${prefix}-ov`, { overflow: 'sideways' }));
  await closeOf(conn, 'bad-dlx-type', (c) => c.assertQueue(`${prefix}-dl`, { arguments: { 'x-dead-letter-exchange': 5 } }));
  await closeOf(conn, 'x-match-invalid', (c) => c.bindQueue(q, 'amq.headers', '', { 'x-match': 'some' }));

  await ch.deleteQueue(q);
  await conn.close();
  emit('closed');
}

async function blocked(url, prefix) {
  const conn = await amqp.connect(withHeartbeat(url));
  const events = [];
  let notify = null;
  const record = (e) => {
    events.push(e);
    if (notify) notify();
  };
  conn.on('blocked', (reason) => record({ event: 'blocked', reason }));
  conn.on('unblocked', () => record({ event: 'unblocked' }));
  const nextEvent = () => within(new Promise((resolve) => {
    if (events.length) resolve(events.shift());
    else notify = () => { notify = null; resolve(events.shift()); };
  }), 'connection.blocked/unblocked');
  const ch = await conn.createConfirmChannel();
  const q = (await ch.assertQueue(`${prefix}-blocked`, { exclusive: true })).queue;
  emit('ready');
  const rl = readline.createInterface({ input: process.stdin });
  const line = await new Promise((resolve) => rl.once('line', resolve));
  rl.close();
  if (line.trim() !== 'publish') throw new Error(`stdin: ${line}`);
  const confirmed = new Promise((resolve) => ch.publish('', q, Buffer.from('during the alarm'), {}, (err) => resolve(!err)));
  for (let i = 0; i < 2; i++) {
    const e = await nextEvent();
    emit(e.event, e.reason === undefined ? {} : { reason: e.reason });
  }
  emit('confirm', { tag: 1, ack: await within(confirmed, 'confirm') });
  const got = await ch.get(q, { noAck: true });
  emit('get', { ok: got !== false, body: got.content.toString() });
  await conn.close();
  emit('closed');
}

const [url, prefix, mode] = process.argv.slice(2);
const run = { scenario, edges, blocked }[mode];
if (!run || !prefix) {
  process.stderr.write('usage: node interop.js URL PREFIX scenario|edges|blocked\n');
  process.exit(2);
}
run(url, prefix).then(() => process.exit(0), (err) => {
  emit('fatal', { error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
