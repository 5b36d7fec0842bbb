// A web-tier publisher and a worker written with the official Go client
// (github.com/rabbitmq/amqp091-go, Debian's golang-github-rabbitmq-amqp091-go-dev 1.5.0),
// printing one JSON object per line: what the client saw, for tests/interop/test_go_client.py
// to compare with what it sees against RabbitMQ 3.10.
//
// usage: interop-go URL PREFIX scenario   (the full publisher/worker run)
//        interop-go URL PREFIX blocked    (waits for "publish" on stdin, during an alarm)
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const timeout = 30 * time.Second

var out = json.NewEncoder(os.Stdout)

func emit(event string, fields map[string]interface{}) {
	if fields == nil {
		fields = map[string]interface{}{}
	}
	fields["event"] = event
	if err := out.Encode(fields); err != nil {
		panic(err)
	}
}

func fail(what string, err error) {
	emit("fatal", map[string]interface{}{"what": what, "error": fmt.Sprint(err)})
	os.Exit(1)
}

func must(what string, err error) {
	if err != nil {
		fail(what, err)
	}
}

// norm describes a decoded field value with the Go type the client chose for it.
func norm(v interface{}) interface{} {
	switch x := v.(type) {
	case amqp.Table:
		m := map[string]interface{}{}
		for k, e := range x {
			m[k] = norm(e)
		}
		return map[string]interface{}{"type": "table", "value": m}
	case []interface{}:
		l := []interface{}{}
		for _, e := range x {
			l = append(l, norm(e))
		}
		return map[string]interface{}{"type": "array", "value": l}
	case time.Time:
		return map[string]interface{}{"type": "time.Time", "value": x.Unix()}
	case amqp.Decimal:
		return map[string]interface{}{"type": "Decimal", "value": []interface{}{x.Scale, x.Value}}
	case []byte:
		return map[string]interface{}{"type": "[]byte", "value": hex.EncodeToString(x)}
	case nil:
		return map[string]interface{}{"type": "nil", "value": nil}
	default:
		return map[string]interface{}{"type": fmt.Sprintf("%T", v), "value": v}
	}
}

func delivery(d amqp.Delivery) map[string]interface{} {
	return map[string]interface{}{
		"exchange": d.Exchange, "routing_key": d.RoutingKey, "redelivered": d.Redelivered,
		"body": string(d.Body),
	}
}

func waitConfirm(confirms chan amqp.Confirmation, what string) amqp.Confirmation {
	select {
	case c, ok := <-confirms:
		if !ok {
			fail(what, fmt.Errorf("confirm channel closed"))
		}
		return c
	case <-time.After(timeout):
		fail(what, fmt.Errorf("no confirm in %s", timeout))
	}
	return amqp.Confirmation{}
}

func next(deliveries <-chan amqp.Delivery, what string) amqp.Delivery {
	select {
	case d, ok := <-deliveries:
		if !ok {
			fail(what, fmt.Errorf("delivery channel closed"))
		}
		return d
	case <-time.After(timeout):
		fail(what, fmt.Errorf("no delivery in %s", timeout))
	}
	return amqp.Delivery{}
}

func dial(url string) *amqp.Connection {
	// A 1 s heartbeat: both sides must keep a connection idle for seconds alive.
	conn, err := amqp.DialConfig(url, amqp.Config{Heartbeat: time.Second, Locale: "en_US"})
	must("dial", err)
	return conn
}

func connected(conn *amqp.Connection) {
	caps, _ := conn.Properties["capabilities"].(amqp.Table)
	names := []string{}
	for k, v := range caps {
		if v == true {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	emit("connected", map[string]interface{}{
		"heartbeat": conn.Config.Heartbeat.Seconds(), "frame_max": conn.Config.FrameSize,
		"channel_max": conn.Config.ChannelMax, "capabilities": names,
	})
}

func scenario(url, prefix string) {
	uri, err := amqp.ParseURI(url)
	must("parse url", err)
	conn := dial(url)
	connected(conn)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	must("channel", err)

	exchange, queue := prefix+"-x", prefix+"-q"
	must("exchange.declare", ch.ExchangeDeclare(exchange, "direct", true, false, false, false, nil))
	q, err := ch.QueueDeclare(queue, true, false, false, false, nil)
	must("queue.declare", err)
	emit("queue.declare-ok", map[string]interface{}{"queue": q.Name, "messages": q.Messages, "consumers": q.Consumers})
	must("queue.bind", ch.QueueBind(queue, "task", exchange, false, nil))

	must("confirm.select", ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 16))

	// A persistent message with every property and a header of each type the client writes.
	headers := amqp.Table{
		"string":    "h\u00e9llo",
		"int32":     int32(-42),
		"int64":     int64(1) << 40,
		"int16":     int16(7),
		"int8":      int8(-8),
		"bool":      true,
		"float64":   1.5,
		"float32":   float32(0.25),
		"timestamp": time.Unix(1700000000, 0),
		"decimal":   amqp.Decimal{Scale: 2, Value: 12345},
		"bytes":     []byte{0, 1, 254},
		"void":      nil,
		"array":     []interface{}{"a", int32(1), true, amqp.Table{"in": "array"}, []interface{}{int64(2)}},
		"nested": amqp.Table{"level": int32(1),
			"deeper": amqp.Table{"level": int32(2), "list": []interface{}{int64(3), "x"}}},
	}
	msg := amqp.Publishing{
		Headers: headers, ContentType: "application/json", ContentEncoding: "utf-8",
		DeliveryMode: amqp.Persistent, Priority: 5, CorrelationId: "corr-1", ReplyTo: "replies",
		Expiration: "600000", MessageId: "msg-1", Timestamp: time.Unix(1700000001, 0),
		Type: "photo.uploaded", UserId: uri.Username, AppId: "web",
		Body: []byte(`{"photo": 1}`),
	}
	must("publish", ch.Publish(exchange, "task", false, false, msg))
	c := waitConfirm(confirms, "confirm")
	emit("confirm", map[string]interface{}{"tag": c.DeliveryTag, "ack": c.Ack})

	d, ok, err := ch.Get(queue, false)
	must("basic.get", err)
	if !ok {
		fail("basic.get", fmt.Errorf("get-empty"))
	}
	got := delivery(d)
	got["message_count"] = d.MessageCount
	got["delivery_tag"] = d.DeliveryTag
	got["properties"] = map[string]interface{}{
		"content_type": d.ContentType, "content_encoding": d.ContentEncoding,
		"delivery_mode": d.DeliveryMode, "priority": d.Priority, "correlation_id": d.CorrelationId,
		"reply_to": d.ReplyTo, "expiration": d.Expiration, "message_id": d.MessageId,
		"timestamp": d.Timestamp.Unix(), "type": d.Type, "user_id": d.UserId == uri.Username,
		"app_id": d.AppId,
	}
	got["headers"] = norm(d.Headers)
	emit("get", got)
	must("ack", d.Ack(false))
	_, ok, err = ch.Get(queue, false)
	must("basic.get", err)
	emit("get-empty", map[string]interface{}{"empty": !ok})

	// A worker: prefetch 2, manual acks, a nack with requeue comes back redelivered.
	for _, body := range []string{"m1", "m2", "m3"} {
		must("publish", ch.Publish(exchange, "task", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}))
	}
	for i := 0; i < 3; i++ {
		c := waitConfirm(confirms, "confirm")
		emit("confirm", map[string]interface{}{"tag": c.DeliveryTag, "ack": c.Ack})
	}
	must("basic.qos", ch.Qos(2, 0, false))
	deliveries, err := ch.Consume(queue, "worker", false, false, false, false, nil)
	must("basic.consume", err)
	first, second := next(deliveries, "deliver"), next(deliveries, "deliver")
	emit("deliver", delivery(first))
	emit("deliver", delivery(second))
	// The third is held back by the prefetch: it is still ready in the queue.
	probe, err := conn.Channel()
	must("channel", err)
	held, err := probe.QueueDeclarePassive(queue, true, false, false, false, nil)
	must("queue.declare passive", err)
	emit("held-back", map[string]interface{}{"messages": held.Messages, "consumers": held.Consumers})
	must("nack", first.Nack(false, true))
	again := next(deliveries, "redeliver")
	emit("deliver", delivery(again))
	must("ack", second.Ack(false))
	third := next(deliveries, "deliver")
	emit("deliver", delivery(third))
	must("ack", again.Ack(false))
	must("ack", third.Ack(false))
	must("basic.cancel", ch.Cancel("worker", false))
	for range deliveries { // closed once cancel-ok arrives
	}
	emit("cancelled", nil)

	// A message larger than frame_max travels in many body frames.
	big := make([]byte, 1<<20+17)
	for i := range big {
		big[i] = byte(i * 7)
	}
	must("publish", ch.Publish(exchange, "task", false, false,
		amqp.Publishing{DeliveryMode: amqp.Persistent, Body: big}))
	c = waitConfirm(confirms, "confirm")
	emit("confirm", map[string]interface{}{"tag": c.DeliveryTag, "ack": c.Ack})
	d, ok, err = ch.Get(queue, true)
	must("basic.get", err)
	sum := sha256.Sum256(d.Body)
	want := sha256.Sum256(big)
	emit("large", map[string]interface{}{"size": len(d.Body), "intact": ok && sum == want})

	// A channel error: the server closes the channel, the connection stays.
	errCh, err := conn.Channel()
	must("channel", err)
	chClosed := errCh.NotifyClose(make(chan *amqp.Error, 1))
	_, err = errCh.QueueDeclarePassive(prefix+"-missing", true, false, false, false, nil)
	if e, ok := err.(*amqp.Error); ok {
		emit("channel-error", map[string]interface{}{"code": e.Code, "text": e.Reason, "server": e.Server})
	} else {
		fail("passive declare of a missing queue", fmt.Errorf("got %v", err))
	}
	select {
	case e := <-chClosed:
		emit("channel-closed", map[string]interface{}{"code": e.Code})
	case <-time.After(timeout):
		fail("channel close notification", fmt.Errorf("none"))
	}
	_, err = errCh.QueueDeclarePassive(queue, true, false, false, false, nil)
	emit("after-error", map[string]interface{}{"error": fmt.Sprint(err), "closed": errCh.IsClosed()})
	alive, err := probe.QueueDeclarePassive(queue, true, false, false, false, nil)
	must("queue.declare passive on another channel", err)
	emit("connection-alive", map[string]interface{}{"messages": alive.Messages})

	// Idle for several heartbeat intervals: heartbeats keep the connection open.
	time.Sleep(3500 * time.Millisecond)
	_, err = probe.QueueDeclarePassive(queue, true, false, false, false, nil)
	emit("after-idle", map[string]interface{}{"ok": err == nil, "closed": conn.IsClosed()})

	n, err := ch.QueueDelete(queue, false, false, false)
	must("queue.delete", err)
	emit("queue.delete-ok", map[string]interface{}{"messages": n})
	must("exchange.delete", ch.ExchangeDelete(exchange, false, false))
	must("connection.close", conn.Close())
	e, open := <-closed
	emit("closed", map[string]interface{}{"error": e != nil || open})
}

// chanErr runs op on a fresh channel and reports the channel error it caused (or none).
func chanErr(conn *amqp.Connection, name string, op func(ch *amqp.Channel) error) {
	ch, err := conn.Channel()
	must("channel", err)
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	err = op(ch)
	if err == nil {
		// Asynchronous errors (publish) arrive as a channel.close: a round trip flushes them.
		_, err = ch.QueueDeclarePassive("amq.rabbitmq.reply-to", false, false, false, false, nil)
	}
	if e, ok := err.(*amqp.Error); err != nil && (!ok || !e.Server) {
		// The close overtook the round trip: the client refused it; the server's reason is here.
		select {
		case e := <-closed:
			if e != nil {
				err = e
			}
		case <-time.After(timeout):
		}
	}
	if e, ok := err.(*amqp.Error); ok {
		emit(name, map[string]interface{}{"code": e.Code, "text": e.Reason, "server": e.Server})
	} else {
		emit(name, map[string]interface{}{"error": fmt.Sprint(err)})
	}
	if !ch.IsClosed() {
		ch.Close()
	}
}

// connErr runs op on a fresh connection and reports how the connection ended.
func connErr(url, name string, op func(ch *amqp.Channel) error) {
	conn := dial(url)
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	must("channel", err)
	err = op(ch)
	fields := map[string]interface{}{"op_error": fmt.Sprint(err)}
	select {
	case e := <-closed:
		if e != nil {
			fields["code"], fields["text"], fields["server"] = e.Code, e.Reason, e.Server
		}
	case <-time.After(timeout):
		fields["timeout"] = true
	}
	fields["closed"] = conn.IsClosed()
	emit(name, fields)
}

func edges(url, prefix string) {
	uri, err := amqp.ParseURI(url)
	must("parse url", err)
	q := prefix + "-e"

	// A small frame_max asked by the client: the broker must split deliveries to fit it.
	small, err := amqp.DialConfig(url, amqp.Config{Heartbeat: time.Second, FrameSize: 4096})
	must("dial frame_max 4096", err)
	ch, err := small.Channel()
	must("channel", err)
	_, err = ch.QueueDeclare(q, false, false, false, false, nil)
	must("queue.declare", err)
	body := make([]byte, 100000)
	for i := range body {
		body[i] = byte(i % 251)
	}
	must("publish", ch.Publish("", q, false, false, amqp.Publishing{Body: body,
		Headers: amqp.Table{"pad": strings.Repeat("h", 3000)}}))
	d, ok, err := ch.Get(q, true)
	must("basic.get", err)
	emit("small-frames", map[string]interface{}{"frame_max": small.Config.FrameSize, "ok": ok,
		"intact": string(d.Body) == string(body), "header": len(fmt.Sprint(d.Headers["pad"]))})
	small.Close()

	conn := dial(url)
	ch, err = conn.Channel()
	must("channel", err)

	// Mandatory and unroutable: basic.return before the confirm.
	must("confirm.select", ch.Confirm(false))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	must("publish", ch.Publish("amq.direct", prefix+"-nowhere", true, false,
		amqp.Publishing{Body: []byte("lost"), CorrelationId: "c-9", Headers: amqp.Table{"k": int32(1)}}))
	select {
	case r := <-returns:
		emit("return", map[string]interface{}{"code": r.ReplyCode, "text": r.ReplyText, "exchange": r.Exchange,
			"routing_key": r.RoutingKey == prefix+"-nowhere", "body": string(r.Body),
			"correlation_id": r.CorrelationId, "headers": norm(r.Headers)})
	case <-time.After(timeout):
		fail("basic.return", fmt.Errorf("none"))
	}
	c := waitConfirm(confirms, "confirm")
	emit("confirm", map[string]interface{}{"tag": c.DeliveryTag, "ack": c.Ack})

	// Transactions.
	tx, err := conn.Channel()
	must("channel", err)
	must("tx.select", tx.Tx())
	must("publish", tx.Publish("", q, false, false, amqp.Publishing{Body: []byte("rolled back")}))
	must("tx.rollback", tx.TxRollback())
	must("publish", tx.Publish("", q, false, false, amqp.Publishing{Body: []byte("committed")}))
	must("tx.commit", tx.TxCommit())
	d, ok, err = tx.Get(q, true)
	must("basic.get", err)
	emit("tx", map[string]interface{}{"body": string(d.Body), "message_count": d.MessageCount, "ok": ok})

	// Reject, nack multiple, recover.
	for _, b := range []string{"r1", "r2", "r3", "r4"} {
		must("publish", tx.Publish("", q, false, false, amqp.Publishing{Body: []byte(b)}))
	}
	must("tx.commit", tx.TxCommit())
	var got []amqp.Delivery
	for i := 0; i < 4; i++ {
		d, ok, err := ch.Get(q, false)
		must("basic.get", err)
		if !ok {
			fail("basic.get", fmt.Errorf("empty"))
		}
		got = append(got, d)
	}
	must("reject", got[0].Reject(false)) // dropped (no dead-letter exchange)
	must("nack", got[2].Nack(true, true)) // multiple: r2 and r3 back
	must("recover", ch.Recover(true))     // r4 back too
	var back []interface{}
	for {
		d, ok, err := ch.Get(q, true)
		must("basic.get", err)
		if !ok {
			break
		}
		back = append(back, []interface{}{string(d.Body), d.Redelivered})
	}
	emit("requeued", map[string]interface{}{"order": back})

	// Direct reply-to.
	rpc, err := conn.Channel()
	must("channel", err)
	replies, err := rpc.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	must("consume amq.rabbitmq.reply-to", err)
	requests, err := ch.Consume(q, "server", true, false, false, false, nil)
	must("consume", err)
	must("publish", rpc.Publish("", q, false, false, amqp.Publishing{Body: []byte("ping"), ReplyTo: "amq.rabbitmq.reply-to"}))
	req := next(requests, "request")
	must("publish", ch.Publish("", req.ReplyTo, false, false, amqp.Publishing{Body: []byte("pong")}))
	rep := next(replies, "reply")
	emit("direct-reply-to", map[string]interface{}{"rewritten": strings.HasPrefix(req.ReplyTo, "amq.rabbitmq.reply-to."),
		"reply": string(rep.Body), "routing_key": rep.RoutingKey == req.ReplyTo})
	must("cancel", ch.Cancel("server", false))

	// Consumer cancel notification when the queue is deleted.
	cq := prefix + "-cancel"
	cch, err := conn.Channel()
	must("channel", err)
	_, err = cch.QueueDeclare(cq, false, false, false, false, nil)
	must("queue.declare", err)
	cancels := cch.NotifyCancel(make(chan string, 1))
	cdel, err := cch.Consume(cq, "doomed", false, false, false, false, nil)
	must("consume", err)
	_, err = ch.QueueDelete(cq, false, false, false)
	must("queue.delete", err)
	select {
	case tag := <-cancels:
		_, open := <-cdel
		emit("consumer-cancelled", map[string]interface{}{"tag": tag, "deliveries_open": open})
	case <-time.After(timeout):
		fail("basic.cancel", fmt.Errorf("none"))
	}

	// Dead-lettering by rejection and by overflow, as the Go client decodes x-death.
	dq, wq := prefix+"-dq", prefix+"-wq"
	_, err = ch.QueueDeclare(dq, false, false, true, false, nil)
	must("queue.declare", err)
	_, err = ch.QueueDeclare(wq, false, false, true, false, amqp.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dq, "x-max-length": int32(1)})
	must("queue.declare", err)
	must("publish", ch.Publish("", wq, false, false, amqp.Publishing{Body: []byte("pushed out"), Expiration: "60000"}))
	must("publish", ch.Publish("", wq, false, false, amqp.Publishing{Body: []byte("rejected")}))
	waitConfirm(confirms, "confirm")
	waitConfirm(confirms, "confirm")
	d, ok, err = ch.Get(wq, false)
	must("basic.get", err)
	must("reject", d.Reject(false))
	ok = false
	for i := 0; i < 2; i++ {
		var dead amqp.Delivery
		for tries := 0; tries < 200 && !ok; tries++ { // each try is a round trip
			dead, ok, err = ch.Get(dq, true)
			must("basic.get", err)
		}
		if !ok {
			fail("dead-lettered", fmt.Errorf("nothing in %s", dq))
		}
		ok = false
		deaths, _ := dead.Headers["x-death"].([]interface{})
		for _, x := range deaths {
			if t, isTable := x.(amqp.Table); isTable {
				t["time"] = time.Unix(0, 0) // the moment differs run to run; its type does not
			}
		}
		delete(dead.Headers, "x-last-death-exchange") // minimq's documented addition
		delete(dead.Headers, "x-last-death-queue")
		delete(dead.Headers, "x-last-death-reason")
		emit("dead-lettered", map[string]interface{}{"body": string(dead.Body), "expiration": dead.Expiration,
			"routing_key": dead.RoutingKey == dq, "headers": norm(dead.Headers)})
	}

	// A quorum queue counts returns in x-delivery-count (on a channel of its own).
	qch, err := conn.Channel()
	must("channel", err)
	qq := prefix + "-qq"
	_, err = qch.QueueDeclare(qq, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	must("queue.declare quorum", err)
	must("confirm.select", qch.Confirm(false))
	qconfirms := qch.NotifyPublish(make(chan amqp.Confirmation, 1))
	must("publish", qch.Publish("", qq, false, false, amqp.Publishing{Body: []byte("again and again")}))
	waitConfirm(qconfirms, "confirm")
	var counts []interface{}
	for i := 0; i < 3; i++ {
		d, ok, err := qch.Get(qq, false)
		must("basic.get", err)
		if !ok {
			fail("basic.get", fmt.Errorf("empty"))
		}
		counts = append(counts, norm(d.Headers["x-delivery-count"]))
		must("nack", d.Nack(false, true))
	}
	_, err = qch.QueueDelete(qq, false, false, false)
	must("queue.delete", err)
	emit("quorum-delivery-count", map[string]interface{}{"counts": counts})

	// A binding is known by its arguments' field types too: int32 1 and int64 1 are two.
	bq := prefix + "-bq"
	_, err = ch.QueueDeclare(bq, false, false, true, false, nil)
	must("queue.declare", err)
	must("queue.bind", ch.QueueBind(bq, bq, "amq.direct", false, amqp.Table{"n": int32(1)}))
	must("queue.bind", ch.QueueBind(bq, bq, "amq.direct", false, amqp.Table{"n": int64(1)}))
	must("queue.unbind", ch.QueueUnbind(bq, bq, "amq.direct", amqp.Table{"n": int64(1)}))
	must("publish", ch.Publish("amq.direct", bq, false, false, amqp.Publishing{Body: []byte("still bound")}))
	waitConfirm(confirms, "confirm")
	d, ok, err = ch.Get(bq, true)
	must("basic.get", err)
	must("queue.unbind", ch.QueueUnbind(bq, bq, "amq.direct", amqp.Table{"n": int32(1)}))
	must("publish", ch.Publish("amq.direct", bq, false, false, amqp.Publishing{Body: []byte("unbound")}))
	waitConfirm(confirms, "confirm")
	_, routed, err := ch.Get(bq, true)
	must("basic.get", err)
	emit("typed-bindings", map[string]interface{}{"after_one_unbind": string(d.Body), "after_both": routed})

	// Soft errors: the channel closes with RabbitMQ's code and text.
	chanErr(conn, "publish-missing-exchange", func(ch *amqp.Channel) error {
		return ch.Publish(prefix+"-nox", "k", false, false, amqp.Publishing{Body: []byte("x")})
	})
	chanErr(conn, "passive-missing-exchange", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclarePassive(prefix+"-nox", "direct", false, false, false, false, nil)
	})
	chanErr(conn, "user-id-mismatch", func(ch *amqp.Channel) error {
		return ch.Publish("", q, false, false, amqp.Publishing{UserId: uri.Username + "-other", Body: []byte("x")})
	})
	chanErr(conn, "bad-expiration", func(ch *amqp.Channel) error {
		return ch.Publish("", q, false, false, amqp.Publishing{Expiration: "soon", Body: []byte("x")})
	})
	ex := prefix + "-ex"
	must("exchange.declare", ch.ExchangeDeclare(ex, "direct", false, true, false, false, nil))
	chanErr(conn, "exchange-inequivalent-type", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil)
	})
	chanErr(conn, "queue-inequivalent-arg", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q, false, false, false, false, amqp.Table{"x-max-length": int32(5)})
		return err
	})
	chanErr(conn, "queue-bad-arg-type", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q+"-ttl", false, false, false, false, amqp.Table{"x-message-ttl": "1000"})
		return err
	})
	chanErr(conn, "quorum-non-durable", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(q+"-qnd", false, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		return err
	})
	chanErr(conn, "quorum-server-named", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare("", true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		return err
	})
	chanErr(conn, "unknown-delivery-tag", func(ch *amqp.Channel) error {
		return ch.Ack(99, false)
	})
	chanErr(conn, "bind-missing-queue", func(ch *amqp.Channel) error {
		return ch.QueueBind(prefix+"-noq", "k", ex, false, nil)
	})
	chanErr(conn, "exclusive-consumer-conflict", func(ch2 *amqp.Channel) error {
		_, err := ch.Consume(q, "only", false, true, false, false, nil)
		if err != nil {
			return err
		}
		_, err = ch2.Consume(q, "second", false, false, false, false, nil)
		return err
	})
	must("cancel", ch.Cancel("only", false))
	eq := prefix + "-excl"
	_, err = ch.QueueDeclare(eq, false, false, true, false, nil)
	must("queue.declare exclusive", err)
	other := dial(url)
	chanErr(other, "exclusive-queue-other-connection", func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclarePassive(eq, false, false, true, false, nil)
		return err
	})
	chanErr(conn, "delete-in-use", func(ch2 *amqp.Channel) error {
		if _, err := ch.Consume(q, "busy", false, false, false, false, nil); err != nil {
			return err
		}
		_, err := ch2.QueueDelete(q, true, false, false)
		return err
	})
	must("cancel", ch.Cancel("busy", false))
	other.Close()

	// Hard errors: the connection closes.
	connErr(url, "unknown-exchange-type", func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(prefix+"-weird", "x-no-such-type", false, true, false, false, nil)
	})
	connErr(url, "prefetch-size", func(ch *amqp.Channel) error {
		return ch.Qos(1, 1000, false)
	})
	connErr(url, "channel-flow-off", func(ch *amqp.Channel) error {
		return ch.Flow(false)
	})
	connErr(url, "publish-immediate", func(ch *amqp.Channel) error {
		return ch.Publish("", q, false, true, amqp.Publishing{Body: []byte("now")})
	})
	secret := dial(url)
	err = secret.UpdateSecret(uri.Password, "rotation")
	emit("update-secret", map[string]interface{}{"error": fmt.Sprint(err), "closed": secret.IsClosed()})
	if !secret.IsClosed() {
		secret.Close()
	}

	_, err = ch.QueueDelete(q, false, false, false)
	must("queue.delete", err)
	must("exchange.delete", ch.ExchangeDelete(ex, false, false))
	must("connection.close", conn.Close())
	emit("closed", nil)
}

func blocked(url, prefix string) {
	conn := dial(url)
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch, err := conn.Channel()
	must("channel", err)
	q, err := ch.QueueDeclare(prefix+"-blocked", false, false, true, false, nil)
	must("queue.declare", err)
	must("confirm.select", ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4))
	emit("ready", nil)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != "publish" {
		fail("stdin", fmt.Errorf("%q %v", line, err))
	}
	must("publish", ch.Publish("", q.Name, false, false, amqp.Publishing{Body: []byte("during the alarm")}))
	for i := 0; i < 2; i++ {
		select {
		case b := <-blocks:
			if b.Active {
				emit("blocked", map[string]interface{}{"reason": b.Reason})
			} else {
				emit("unblocked", nil)
			}
		case <-time.After(timeout):
			fail("connection.blocked", fmt.Errorf("none in %s", timeout))
		}
	}
	c := waitConfirm(confirms, "confirm")
	emit("confirm", map[string]interface{}{"tag": c.DeliveryTag, "ack": c.Ack})
	d, ok, err := ch.Get(q.Name, true)
	must("basic.get", err)
	emit("get", map[string]interface{}{"ok": ok, "body": string(d.Body)})
	must("connection.close", conn.Close())
	emit("closed", nil)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: interop-go URL PREFIX scenario|edges|blocked")
		os.Exit(2)
	}
	switch os.Args[3] {
	case "scenario":
		scenario(os.Args[1], os.Args[2])
	case "blocked":
		blocked(os.Args[1], os.Args[2])
	case "edges":
		edges(os.Args[1], os.Args[2])
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[3])
		os.Exit(2)
	}
}
