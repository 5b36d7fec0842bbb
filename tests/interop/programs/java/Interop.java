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
            System.err.println("usage: java Interop URL PREFIX scenario|blocked");
            System.exit(2);
        }
        if (args[2].equals("scenario")) scenario(args[0], args[1]);
        else if (args[2].equals("blocked")) blocked(args[0], args[1]);
        else System.exit(2);
    }
}
