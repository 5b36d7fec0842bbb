"""minimq: an embeddable AMQP 0-9-1 message broker in pure Python."""

__version__ = "0.1.0"
