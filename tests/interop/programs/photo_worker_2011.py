"""A photo-site worker as it was written in 2011 with py-amqplib (run unchanged by the test).

    python photo_worker_2011.py HOST:PORT QUEUE EXCHANGE COUNT

Declares, binds, publishes COUNT persistent messages, consumes them with a callback in the
classic `while chan.callbacks: chan.wait()` loop, acks each, cancels after the last, then
cleans up. Prints one line per event for the test to check.
"""
import sys

from amqplib import client_0_8 as amqp

host, queue, exchange, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

conn = amqp.Connection(host=host, userid="guest", password="guest", virtual_host="/", insist=False)
chan = conn.channel()
chan.access_request("/data", active=True, write=True, read=True)

chan.queue_declare(queue=queue, durable=True, exclusive=False, auto_delete=False)
chan.exchange_declare(exchange=exchange, type="direct", durable=True, auto_delete=False)
chan.queue_bind(queue=queue, exchange=exchange, routing_key="resize")

for i in range(count):
    msg = amqp.Message("photo %d" % i, content_type="text/plain", delivery_mode=2,
                       application_headers={"size": i})
    chan.basic_publish(msg, exchange=exchange, routing_key="resize")

seen = []


def recv_callback(msg):
    seen.append(msg.body)
    print("got %s tag=%d type=%s size=%s redelivered=%s" % (
        msg.body, msg.delivery_info["delivery_tag"], msg.properties.get("content_type"),
        msg.properties["application_headers"]["size"], msg.delivery_info["redelivered"]), flush=True)
    chan.basic_ack(msg.delivery_info["delivery_tag"])
    if len(seen) == count:
        chan.basic_cancel("photo-worker")


chan.basic_consume(queue=queue, no_ack=False, callback=recv_callback, consumer_tag="photo-worker")
while chan.callbacks:
    chan.wait()

print("get-after-drain %r" % (chan.basic_get(queue),), flush=True)
chan.basic_publish(amqp.Message("late"), exchange=exchange, routing_key="resize")
late = chan.basic_get(queue, no_ack=True)
print("get %s count=%d" % (late.body, late.delivery_info["message_count"]), flush=True)
print("deleted %d" % chan.queue_delete(queue=queue), flush=True)
chan.exchange_delete(exchange=exchange)
try:
    chan.queue_declare(queue=queue, passive=True)
except amqp.AMQPChannelException as exc:
    print("passive %d %s" % (exc.amqp_reply_code, exc.amqp_reply_text), flush=True)
chan = conn.channel()
chan.close()
conn.close()
print("done %d" % len(seen), flush=True)
