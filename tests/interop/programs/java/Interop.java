// A web-tier publisher and a worker written with the RabbitMQ Java client (Debian's
// librabbitmq-client-java 5.0.0), printing one JSON object per line: what the client saw, for
// tests/interop/test_java_client.py to compare with what it sees against RabbitMQ 3.10.
//
// usage: java Interop URL PREFIX scenario   (the full publisher/worker run)
//        java Interop URL PREFIX blocked    (waits for "publish" on stdin, during an alarm)

import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.AlreadyClosedException;
import com.rabbitmq.client.BlockedListener;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import com.rabbitmq.client.GetResponse;
import com.rabbitmq.client.LongString;
import com.rabbitmq.client.ShutdownSignalException;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

public class Interop {
    static final long TIMEOUT_MS = 30_000;

    // ------------------------------------------------------------------ a tiny JSON writer

    static String json(Object v) {
        StringBuilder b = new StringBuilder();
        write(b, v);
        return b.toString();
    }

    @SuppressWarnings("unchecked")
    static void write(StringBuilder b, Object v) {
        if (v == null) {
            b.append("null");
        } else if (v instanceof String) {
            b.append('"');
            for (char c : ((String) v).toCharArray()) {
                if (c == '"' || c == '\\') b.append('\\').append(c);
                else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
                else b.append(c);
            }
            b.append('"');
        } else if (v instanceof Map) {
            b.append('{');
            boolean first = true;
            for (Map.Entry<String, Object> e : ((Map<String, Object>) v).entrySet()) {
                if (!first) b.append(", ");
                first = false;
                write(b, e.getKey());
                b.append(": ");
                write(b, e.getValue());
            }
            b.append('}');
        } else if (v instanceof List) {
            b.append('[');
            boolean first = true;
            for (Object e : (List<Object>) v) {
                if (!first) b.append(", ");
                first = false;
                write(b, e);
            }
            b.append(']');
        } else {
            b.append(v.toString()); // numbers and booleans
        }
    }

    static Map<String, Object> obj(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) m.put((String) kv[i], kv[i + 1]);
        return m;
    }

    static void emit(String event, Object... kv) {
        Map<String, Object> m = obj(kv);
        m.put("event", event);
        System.out.println(json(m));
        System.out.flush();
    }

    static String hex(byte[] bytes) {
        StringBuilder b = new StringBuilder();
        for (byte x : bytes) b.append(String.format("%02x", x & 0xff));
        return b.toString();
    }

    /** A decoded field value with the Java type the client chose for it. */
    @SuppressWarnings("unchecked")
    static Object norm(Object v) {
        if (v == null) return obj("type", "null", "value", null);
        if (v instanceof LongString) return obj("type", "LongString", "value", v.toString());
        if (v instanceof Map) {
            Map<String, Object> m = new TreeMap<>();
            for (Map.Entry<String, Object> e : ((Map<String, Object>) v).entrySet()) m.put(e.getKey(), norm(e.getValue()));
            return obj("type", "Map", "value", m);
        }
        if (v instanceof List) {
            List<Object> l = new ArrayList<>();
            for (Object e : (List<Object>) v) l.add(norm(e));
            return obj("type", "List", "value", l);
        }
        if (v instanceof Date) return obj("type", "Date", "value", ((Date) v).getTime() / 1000);
        if (v instanceof BigDecimal) {
            BigDecimal d = (BigDecimal) v;
            return obj("type", "BigDecimal", "value", Arrays.asList(d.scale(), d.unscaledValue()));
        }
        if (v instanceof byte[]) return obj("type", "byte[]", "value", hex((byte[]) v));
        return obj("type", v.getClass().getSimpleName(), "value", v);
    }

    static String str(Object v) {
        return v == null ? null : v.toString();
    }

    static ConnectionFactory factory(String url) throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setUri(url);
        f.setRequestedHeartbeat(1); // both sides must keep a connection idle for seconds alive
        f.setAutomaticRecoveryEnabled(false);
        return f;
    }

    static Map<String, Object> delivery(Envelope env, byte[] body) {
        return obj("exchange", env.getExchange(), "routing_key", env.getRoutingKey(),
                   "redelivered", env.isRedeliver(), "body", new String(body, StandardCharsets.UTF_8));
    }

    static final class Delivered {
        final Envelope envelope;
        final byte[] body;

        Delivered(Envelope envelope, byte[] body) {
            this.envelope = envelope;
            this.body = body;
        }
    }

    static Delivered next(BlockingQueue<Delivered> q) throws Exception {
        Delivered d = q.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        if (d == null) throw new IllegalStateException("no delivery in " + TIMEOUT_MS + " ms");
        return d;
    }

    static void confirm(Channel ch) throws Exception {
        ch.waitForConfirmsOrDie(TIMEOUT_MS);
        emit("confirmed", "next_seq", ch.getNextPublishSeqNo());
    }

    // ------------------------------------------------------------------ the scenario

    static void scenario(String url, String prefix) throws Exception {
        ConnectionFactory f = factory(url);
        Connection conn = f.newConnection();
        Map<String, Object> caps = (Map<String, Object>) conn.getServerProperties().get("capabilities");
        List<String> names = new ArrayList<>();
        for (Map.Entry<String, Object> e : new TreeMap<>(caps).entrySet())
            if (Boolean.TRUE.equals(e.getValue())) names.add(e.getKey());
        emit("connected", "heartbeat", conn.getHeartbeat(), "frame_max", conn.getFrameMax(),
             "channel_max", conn.getChannelMax(), "capabilities", names);
        Channel ch = conn.createChannel();

        String exchange = prefix + "-x", queue = prefix + "-q";
        ch.exchangeDeclare(exchange, "direct", true);
        AMQP.Queue.DeclareOk ok = ch.queueDeclare(queue, true, false, false, null);
        emit("queue.declare-ok", "queue", ok.getQueue(), "messages", ok.getMessageCount(),
             "consumers", ok.getConsumerCount());
        ch.queueBind(queue, exchange, "task");
        ch.confirmSelect();

        // A persistent message with every property and a header of each type the client writes.
        Map<String, Object> deeper = new LinkedHashMap<>();
        deeper.put("level", 2);
        deeper.put("list", Arrays.asList(3L, "x"));
        Map<String, Object> nested = new LinkedHashMap<>();
        nested.put("level", 1);
        nested.put("deeper", deeper);
        Map<String, Object> headers = new LinkedHashMap<>();
        headers.put("string", "h\u00e9llo");
        headers.put("int", -42);
        headers.put("long", 1L << 40);
        headers.put("short", (short) 7);
        headers.put("byte", (byte) -8);
        headers.put("bool", true);
        headers.put("double", 1.5);
        headers.put("float", 0.25f);
        headers.put("timestamp", new Date(1700000000_000L));
        headers.put("decimal", new BigDecimal("123.45"));
        headers.put("bytes", new byte[] {0, 1, (byte) 254});
        headers.put("void", null);
        headers.put("array", Arrays.asList("a", 1, true, obj("in", "array"), Arrays.asList(2L)));
        headers.put("nested", nested);
        String user = f.getUsername();
        AMQP.BasicProperties props = new AMQP.BasicProperties.Builder()
            .contentType("application/json").contentEncoding("utf-8").headers(headers)
            .deliveryMode(2).priority(5).correlationId("corr-1").replyTo("replies")
            .expiration("600000").messageId("msg-1").timestamp(new Date(1700000001_000L))
            .type("photo.uploaded").userId(user).appId("web").build();
        ch.basicPublish(exchange, "task", props, "{\"photo\": 1}".getBytes(StandardCharsets.UTF_8));
        confirm(ch);

        GetResponse got = ch.basicGet(queue, false);
        AMQP.BasicProperties p = got.getProps();
        Map<String, Object> g = delivery(got.getEnvelope(), got.getBody());
        g.put("message_count", got.getMessageCount());
        g.put("delivery_tag", got.getEnvelope().getDeliveryTag());
        g.put("properties", obj(
            "content_type", p.getContentType(), "content_encoding", p.getContentEncoding(),
            "delivery_mode", p.getDeliveryMode(), "priority", p.getPriority(),
            "correlation_id", p.getCorrelationId(), "reply_to", p.getReplyTo(),
            "expiration", p.getExpiration(), "message_id", p.getMessageId(),
            "timestamp", p.getTimestamp().getTime() / 1000, "type", p.getType(),
            "user_id", user.equals(p.getUserId()), "app_id", p.getAppId()));
        g.put("headers", norm(p.getHeaders()));
        System.out.println(json(withEvent("get", g)));
        ch.basicAck(got.getEnvelope().getDeliveryTag(), false);
        emit("get-empty", "empty", ch.basicGet(queue, false) == null);

        // A worker: prefetch 2, manual acks, a nack with requeue comes back redelivered.
        for (String body : new String[] {"m1", "m2", "m3"})
            ch.basicPublish(exchange, "task", new AMQP.BasicProperties.Builder().deliveryMode(2).build(),
                            body.getBytes(StandardCharsets.UTF_8));
        confirm(ch);
        ch.basicQos(2);
        BlockingQueue<Delivered> deliveries = new LinkedBlockingQueue<>();
        BlockingQueue<String> cancelled = new LinkedBlockingQueue<>();
        ch.basicConsume(queue, false, "worker", new DefaultConsumer(ch) {
            @Override
            public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties pr, byte[] body) {
                deliveries.add(new Delivered(env, body));
            }

            @Override
            public void handleCancelOk(String tag) {
                cancelled.add(tag);
            }
        });
        Delivered first = next(deliveries), second = next(deliveries);
        System.out.println(json(withEvent("deliver", delivery(first.envelope, first.body))));
        System.out.println(json(withEvent("deliver", delivery(second.envelope, second.body))));
        Channel probe = conn.createChannel();
        AMQP.Queue.DeclareOk held = probe.queueDeclarePassive(queue);
        emit("held-back", "messages", held.getMessageCount(), "consumers", held.getConsumerCount());
        ch.basicNack(first.envelope.getDeliveryTag(), false, true);
        Delivered again = next(deliveries);
        System.out.println(json(withEvent("deliver", delivery(again.envelope, again.body))));
        ch.basicAck(second.envelope.getDeliveryTag(), false);
        Delivered third = next(deliveries);
        System.out.println(json(withEvent("deliver", delivery(third.envelope, third.body))));
        ch.basicAck(third.envelope.getDeliveryTag(), true); // multiple: acks the redelivery too
        ch.basicCancel("worker");
        emit("cancelled", "tag", cancelled.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS));

        // A message larger than frame_max travels in many body frames.
        byte[] big = new byte[(1 << 20) + 17];
        for (int i = 0; i < big.length; i++) big[i] = (byte) (i * 7);
        ch.basicPublish(exchange, "task", new AMQP.BasicProperties.Builder().deliveryMode(2).build(), big);
        confirm(ch);
        GetResponse large = ch.basicGet(queue, true);
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        emit("large", "size", large.getBody().length,
             "intact", Arrays.equals(sha.digest(large.getBody()), MessageDigest.getInstance("SHA-256").digest(big)));

        // A channel error: the server closes the channel, the connection stays.
        Channel errCh = conn.createChannel();
        try {
            errCh.queueDeclarePassive(prefix + "-missing");
            emit("no-error");
        } catch (IOException e) {
            ShutdownSignalException s = (ShutdownSignalException) e.getCause();
            AMQP.Channel.Close close = (AMQP.Channel.Close) s.getReason();
            emit("channel-error", "code", close.getReplyCode(), "text", close.getReplyText(),
                 "class_id", close.getClassId(), "method_id", close.getMethodId(),
                 "hard", s.isHardError(), "initiated_by_application", s.isInitiatedByApplication());
        }
        emit("channel-state", "open", errCh.isOpen());
        try {
            errCh.queueDeclarePassive(queue);
            emit("no-error");
        } catch (AlreadyClosedException e) {
            emit("after-error", "error", e.getMessage());
        }
        AMQP.Queue.DeclareOk alive = probe.queueDeclarePassive(queue);
        emit("connection-alive", "messages", alive.getMessageCount(), "open", conn.isOpen());

        // Idle for several heartbeat intervals: heartbeats keep the connection open.
        Thread.sleep(3500);
        probe.queueDeclarePassive(queue);
        emit("after-idle", "open", conn.isOpen());

        AMQP.Queue.DeleteOk deleted = ch.queueDelete(queue);
        emit("queue.delete-ok", "messages", deleted.getMessageCount());
        ch.exchangeDelete(exchange);
        conn.close();
        emit("closed", "open", conn.isOpen(),
             "initiated_by_application", conn.getCloseReason().isInitiatedByApplication());
    }

    static Map<String, Object> withEvent(String event, Map<String, Object> m) {
        m.put("event", event);
        return m;
    }

    /** Runs op on a fresh channel; reports the channel.close (or connection.close) it caused. */
    interface Op {
        void run(Channel ch) throws Exception;
    }

    static void closeOf(String event, Connection conn, Op op) throws Exception {
        Channel ch = conn.createChannel();
        try {
            op.run(ch);
            ch.basicQos(0); // a round trip: an asynchronous channel.close arrives before its ok
            emit(event, "error", null);
        } catch (IOException | AlreadyClosedException e) {
            ShutdownSignalException s = e instanceof AlreadyClosedException
                ? (ShutdownSignalException) e : (ShutdownSignalException) e.getCause();
            Object reason = s.getReason();
            if (reason instanceof AMQP.Channel.Close) {
                AMQP.Channel.Close c = (AMQP.Channel.Close) reason;
                emit(event, "channel_close", Arrays.asList(c.getReplyCode(), c.getReplyText(), c.getClassId(), c.getMethodId()));
            } else {
                AMQP.Connection.Close c = (AMQP.Connection.Close) reason;
                emit(event, "connection_close", Arrays.asList(c.getReplyCode(), c.getReplyText(), c.getClassId(), c.getMethodId()),
                     "hard", s.isHardError());
            }
        } catch (ShutdownSignalException s) {
            emit(event, "shutdown", s.getMessage());
        }
    }

    static void edges(String url, String prefix) throws Exception {
        ConnectionFactory f = factory(url);
        f.setRequestedHeartbeat(0);
        f.setRequestedFrameMax(4096);
        f.setRequestedChannelMax(16);
        Connection conn = f.newConnection();
        emit("tuned", "heartbeat", conn.getHeartbeat(), "frame_max", conn.getFrameMax(), "channel_max", conn.getChannelMax());
        Channel ch = conn.createChannel();
        String q = prefix + "-e";
        ch.queueDeclare(q, false, false, false, null);
        byte[] body = new byte[50000];
        for (int i = 0; i < body.length; i++) body[i] = (byte) (i % 253);
        ch.basicPublish("", q, null, body);
        GetResponse got = ch.basicGet(q, true);
        emit("small-frames", "intact", Arrays.equals(got.getBody(), body));

        // Headers exchange: which header values match a binding's, across field types.
        String hx = prefix + "-hx", hq = prefix + "-hq";
        ch.exchangeDeclare(hx, "headers", false, true, null);
        ch.queueDeclare(hq, false, false, true, null);
        Map<String, Object> bind = new LinkedHashMap<>();
        bind.put("x-match", "all");
        bind.put("n", 1);
        ch.queueBind(hq, hx, "", bind);
        Map<String, Object> bindAny = new LinkedHashMap<>();
        bindAny.put("x-match", "any");
        bindAny.put("s", "abc");
        bindAny.put("present", null);
        ch.queueBind(hq, hx, "", bindAny);
        Object[][] values = {
            {"int", "n", 1}, {"long", "n", 1L}, {"short", "n", (short) 1}, {"byte", "n", (byte) 1},
            {"double", "n", 1.0}, {"float", "n", 1.0f}, {"string", "n", "1"}, {"bool", "n", true},
            {"decimal", "n", new BigDecimal("1")}, {"timestamp", "n", new Date(1000)}, {"int2", "n", 2},
            {"bytes-abc", "s", "abc".getBytes(StandardCharsets.UTF_8)}, {"string-abc", "s", "abc"},
            {"void-present", "present", null}, {"int-present", "present", 5}, {"absent", "other", 1},
        };
        for (Object[] v : values) {
            Map<String, Object> h = new LinkedHashMap<>();
            h.put((String) v[1], v[2]);
            ch.basicPublish(hx, "", new AMQP.BasicProperties.Builder().headers(h).build(),
                            ((String) v[0]).getBytes(StandardCharsets.UTF_8));
        }
        List<String> routed = new ArrayList<>();
        for (GetResponse r; (r = ch.basicGet(hq, true)) != null; )
            routed.add(new String(r.getBody(), StandardCharsets.UTF_8));
        emit("headers-routed", "bodies", routed);

        // Exchange-to-exchange, topic, and a priority queue.
        String tx = prefix + "-tx", pq = prefix + "-pq";
        ch.exchangeDeclare(tx, "topic", false, true, null);
        ch.exchangeBind(tx, "amq.topic", prefix + ".#");
        Map<String, Object> pargs = new LinkedHashMap<>();
        pargs.put("x-max-priority", 5);
        ch.queueDeclare(pq, false, false, true, pargs);
        ch.queueBind(pq, tx, "*." + "photo.*");
        int[] prios = {0, 9, 3, 5, 1};
        for (int i = 0; i < prios.length; i++)
            ch.basicPublish("amq.topic", prefix + ".photo.p" + i,
                            new AMQP.BasicProperties.Builder().priority(prios[i]).build(),
                            ("p" + prios[i]).getBytes(StandardCharsets.UTF_8));
        ch.basicPublish("amq.topic", prefix + ".video.x", null, "video".getBytes(StandardCharsets.UTF_8));
        List<String> order = new ArrayList<>();
        for (GetResponse r; (r = ch.basicGet(pq, true)) != null; )
            order.add(new String(r.getBody(), StandardCharsets.UTF_8) + "@" + r.getEnvelope().getRoutingKey().substring(prefix.length()));
        emit("priority-order", "bodies", order);

        // A mandatory publish nobody takes comes back through the ReturnListener.
        BlockingQueue<String> returns = new LinkedBlockingQueue<>();
        ch.addReturnListener((code, text, exchange, key, props, b) ->
            returns.add(code + " " + text + " " + exchange + " " + (key.equals(q + "-none") ? "key" : key) + " " + new String(b, StandardCharsets.UTF_8)));
        ch.basicPublish("", q + "-none", true, null, "unroutable".getBytes(StandardCharsets.UTF_8));
        emit("returned", "return", returns.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS));

        // The server cancels a consumer whose queue is deleted: handleCancel.
        String cq = prefix + "-cq";
        ch.queueDeclare(cq, false, false, false, null);
        BlockingQueue<String> cancels = new LinkedBlockingQueue<>();
        Channel cch = conn.createChannel();
        cch.basicConsume(cq, false, "doomed", new DefaultConsumer(cch) {
            @Override
            public void handleCancel(String tag) {
                cancels.add(tag);
            }
        });
        ch.queueDelete(cq);
        emit("consumer-cancelled", "tag", cancels.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS), "open", cch.isOpen());

        // basic.recover requeues unacked deliveries, redelivered.
        ch.basicPublish("", q, null, "again".getBytes(StandardCharsets.UTF_8));
        GetResponse first = ch.basicGet(q, false);
        ch.basicRecover(true);
        GetResponse second = ch.basicGet(q, true);
        emit("recovered", "first", first.getEnvelope().isRedeliver(), "second", second.getEnvelope().isRedeliver(),
             "body", new String(second.getBody(), StandardCharsets.UTF_8));

        // Channel and connection closes with the class and method that caused them.
        closeOf("publish-missing-exchange", conn, c -> c.basicPublish(prefix + "-nox", "k", null, new byte[0]));
        closeOf("ack-unknown-tag", conn, c -> c.basicAck(42, false));
        closeOf("double-ack", conn, c -> {
            c.basicPublish("", q, null, new byte[] {1});
            long tag = c.basicGet(q, false).getEnvelope().getDeliveryTag();
            c.basicAck(tag, false);
            c.basicAck(tag, false);
        });
        closeOf("reject-unknown-tag", conn, c -> c.basicReject(7, true));
        closeOf("get-missing-queue", conn, c -> c.basicGet(prefix + "-noq", true));
        closeOf("consume-missing-queue", conn, c -> c.basicConsume(prefix + "-noq", new DefaultConsumer(c)));
        closeOf("purge-missing-queue", conn, c -> c.queuePurge(prefix + "-noq"));
        closeOf("delete-exchange-missing", conn, c -> c.exchangeDeclarePassive(prefix + "-nox"));
        closeOf("bind-missing-exchange", conn, c -> c.queueBind(q, prefix + "-nox", "k"));
        closeOf("exchange-bind-missing", conn, c -> c.exchangeBind(prefix + "-nox", "amq.direct", "k"));
        closeOf("redeclare-amq-exchange", conn, c -> c.exchangeDeclare("amq.direct", "fanout"));
        closeOf("declare-amq-prefix", conn, c -> c.exchangeDeclare("amq.custom-" + prefix, "direct"));
        closeOf("queue-amq-prefix", conn, c -> c.queueDeclare("amq.q-" + prefix, false, false, false, null));
        closeOf("delete-default-exchange", conn, c -> c.exchangeDelete(""));
        closeOf("nowait-missing-queue", conn, c -> c.queueBindNoWait(prefix + "-noq", "amq.direct", "k", null));
        closeOf("consume-tag-in-use", f.newConnection(), c -> {
            c.basicConsume(q, false, "same", new DefaultConsumer(c));
            c.basicConsume(q, false, "same", new DefaultConsumer(c));
        });
        closeOf("prefetch-size", f.newConnection(), c -> c.basicQos(1000, 1, false));
        closeOf("unknown-exchange-type", f.newConnection(), c -> c.exchangeDeclare(prefix + "-w", "x-weird"));
        closeOf("immediate", f.newConnection(), c -> c.basicPublish("", q, false, true, null, new byte[0]));

        ch.queueDelete(q);
        conn.close();
        emit("closed", "open", conn.isOpen());
    }

    static void blocked(String url, String prefix) throws Exception {
        Connection conn = factory(url).newConnection();
        BlockingQueue<String> blocks = new LinkedBlockingQueue<>();
        conn.addBlockedListener(new BlockedListener() {
            @Override
            public void handleBlocked(String reason) {
                blocks.add("blocked:" + reason);
            }

            @Override
            public void handleUnblocked() {
                blocks.add("unblocked");
            }
        });
        Channel ch = conn.createChannel();
        String q = ch.queueDeclare(prefix + "-blocked", false, true, true, null).getQueue();
        ch.confirmSelect();
        emit("ready");
        String line = new BufferedReader(new InputStreamReader(System.in)).readLine();
        if (!"publish".equals(line)) throw new IllegalStateException("stdin: " + line);
        ch.basicPublish("", q, null, "during the alarm".getBytes(StandardCharsets.UTF_8));
        for (int i = 0; i < 2; i++) {
            String b = blocks.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            if (b == null) throw new IllegalStateException("no connection.blocked/unblocked");
            if (b.startsWith("blocked:")) emit("blocked", "reason", b.substring(8));
            else emit("unblocked");
        }
        ch.waitForConfirmsOrDie(TIMEOUT_MS);
        emit("confirm", "tag", ch.getNextPublishSeqNo() - 1, "ack", true);
        GetResponse got = ch.basicGet(q, true);
        emit("get", "ok", got != null, "body", new String(got.getBody(), StandardCharsets.UTF_8));
        conn.close();
        emit("closed");
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: java Interop URL PREFIX scenario|edges|blocked");
            System.exit(2);
        }
        if (args[2].equals("scenario")) scenario(args[0], args[1]);
        else if (args[2].equals("blocked")) blocked(args[0], args[1]);
        else if (args[2].equals("edges")) edges(args[0], args[1]);
        else System.exit(2);
    }
}
