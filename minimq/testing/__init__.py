"""minimq for test suites: a real AMQP broker in process, on a free port, in milliseconds.

    from minimq.testing import Broker

    with Broker() as broker:                 # or: async with Broker() as broker:
        ...  # connect any AMQP 0-9-1 client to broker.url

Besides serving clients it lets a test look inside (queues, messages, bindings, consumers,
unacked deliveries), wait for a condition without sleeping, drive a virtual clock and inject
faults. The pytest plugin (minimq.testing.pytest_plugin, registered as the `minimq` pytest11
entry point) provides the `minimq_broker` and `minimq_url` fixtures.
"""
from minimq.testing.broker import Broker
from minimq.testing.clock import VirtualClock
from minimq.testing.views import (
    BindingInfo,
    ChannelInfo,
    ConnectionInfo,
    ConsumerInfo,
    ExchangeInfo,
    MessageView,
    QueueInfo,
    UnackedInfo,
)

__all__ = [
    "Broker",
    "VirtualClock",
    "BindingInfo",
    "ChannelInfo",
    "ConnectionInfo",
    "ConsumerInfo",
    "ExchangeInfo",
    "MessageView",
    "QueueInfo",
    "UnackedInfo",
]
