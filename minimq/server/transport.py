"""The asyncio transport: one Protocol per socket, feeding bytes to a broker Session.

Thin on purpose. Each `data_received` parses every complete frame, lets the broker act on
them, then writes everything the connection has to send in one `transport.write`. Output
that other connections' activity produced for this one (deliveries, cancels) is flushed once
per event-loop iteration through `call_soon`, so many deliveries share one write.
Backpressure: when the socket's write buffer is full, deliveries to this connection pause.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from minimq.broker.teardown import guarded
from minimq.codec import spec
from minimq.codec.errors import ConnectionForced
from minimq.protocol.states import ConnState
from minimq.server.limits import ServerLimits

if TYPE_CHECKING:
    from minimq.broker import Broker
    from minimq.broker.session import Session

log = logging.getLogger("minimq.server")

CLOSE_OK_TIMEOUT = 3.0  # how long to wait for the peer's close-ok before dropping it
# After close-ok, how long to keep reading (and discarding) until the peer hangs up. RabbitMQ
# waits too: closing with unread bytes in the socket would answer the peer's in-flight writes
# with a TCP reset (ECONNRESET) instead of a clean end of stream.
CLOSED_LINGER = 10.0


class AMQPServerProtocol(asyncio.Protocol):
    # Set by the Server for each connection it accepts (before connection_made).
    limits: ServerLimits = ServerLimits()
    # Connections still in the handshake, oldest first (shared by the Server's connections).
    handshaking: "dict[AMQPServerProtocol, None] | None" = None
    # The Server, when it has a memory limit: told how much input arrived (check_memory_now).
    memory_watch: Any = None

    def __init__(self, broker: "Broker", connections: set) -> None:
        self.broker = broker
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session: "Session | None" = None
        self.peer = ""
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._heartbeat_started = False
        # Memory alarm (set by the Server for every connection): RabbitMQ's flow control.
        self.alarm: str | None = None
        self._alarm_notified = False  # connection.blocked sent
        self._alarm_paused = False  # reading paused because this connection published
        self._last_recv = 0.0
        self._last_sent = 0.0
        self._closing = False
        self.connected_at = time.time()  # wall-clock, for the management API
        # Input left unhandled (a used-up slice, or output above the high-water mark):
        # reading is paused until the session has worked through it.
        self._input_pending = False
        self._continue_scheduled = False
        self._reading = True

    # ------------------------------------------------------------ asyncio API

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        limits = self.limits
        if limits.max_connections and len(self.connections) >= limits.max_connections:
            # As RabbitMQ's connection_max: the node takes no more connections.
            log.warning(
                "connection limit (%d) reached: closing new connection from %s",
                limits.max_connections, self.peer,
            )
            transport.abort()
            return
        handshaking = self.handshaking
        if handshaking is not None:
            if len(handshaking) >= limits.max_unauthenticated:
                # Unauthenticated peers cost memory and sockets: keep a bounded number,
                # dropping the one that has waited longest (honest clients log in within
                # milliseconds, so the oldest is the likeliest idle one).
                oldest = next(iter(handshaking))
                log.warning(
                    "%d connections in the handshake: dropping the oldest (%s)",
                    len(handshaking), oldest.peer,
                )
                oldest.abort()
                handshaking.pop(oldest, None)
            handshaking[self] = None
        # Output credit: at most about twice the high-water mark waits for one connection
        # (in the session's `out` and in the socket's buffer) before it gets no more.
        transport.set_write_buffer_limits(limits.output_high_water, limits.output_low_water)
        session = self.broker.new_session(self.peer)
        session.output_high_water = limits.output_high_water
        session.hold_publishes = self.alarm is not None  # opened during an alarm
        session.on_wake = self._on_wake
        self.session = session
        self.connections.add(self)
        # Heartbeat bookkeeping is in the broker clock's time and its checks run on the
        # broker's timers, so a virtual clock (minimq.testing) drives heartbeats too.
        now = self.broker.clock()
        self._last_recv = self._last_sent = now
        self._timers["handshake"] = self.loop.call_later(limits.handshake_timeout, self._handshake_timeout)
        log.debug("accepted %s", self.peer)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        self._last_recv = self.broker.clock()
        watch = self.memory_watch
        if watch is not None:
            watch.input_bytes += len(data)
            if watch.input_bytes >= watch.input_check:
                watch.check_memory_now()
        self._feed(session, data)
        if not self._heartbeat_started and session.conn.state is ConnState.OPEN:
            self._opened()

    def _feed(self, session: "Session", data: bytes) -> None:
        session.wake_pending = True  # we flush below; no need to schedule one
        session.published = False
        try:
            more = session.feed(data, self.broker.clock() + self.limits.input_slice)
        except Exception as exc:  # a bug must cost one connection, never the broker
            log.exception("internal error on connection %s", self.peer)
            # Unconfirmed publishes are nacked before the 541 connection.close.
            guarded(f"closing connection {self.peer} after an internal error", session.fail_internal, exc)
            more = False
        if self.alarm is not None:
            self._apply_alarm()
        if more != self._input_pending:
            self._input_pending = more
            self._update_reading()
        self.flush()
        if more:
            self._continue_soon()

    # ------------------------------------------------------- input in slices

    def _continue_soon(self) -> None:
        """Handle the rest of the input on a later loop iteration, once output allows.

        Other connections get their turn in between; a connection whose output is above its
        high-water mark waits for its socket to drain (resume_writing calls this again).
        """
        session = self.session
        if self._continue_scheduled or session is None or not session.writable:
            return
        if session.hold_publishes and session.holding():
            return  # a publish waits for the alarm to clear (alarm_off calls this again)
        self._continue_scheduled = True
        self.loop.call_soon(self._continue_input)

    def _continue_input(self) -> None:
        self._continue_scheduled = False
        session = self.session
        transport = self.transport
        if session is None or transport is None or transport.is_closing() or not self._input_pending:
            return
        if not session.writable:
            return  # resume_writing calls _continue_soon
        self._feed(session, b"")

    def _update_reading(self) -> None:
        """Read from the socket unless the memory alarm or unhandled input says not to."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        want = not (self._alarm_paused or self._input_pending)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # ----------------------------------------------------------- memory alarm

    def alarm_on(self, reason: str) -> None:
        """An alarm is on: block this connection if it is part-way through a message.

        An idle or consuming connection is left alone; one that publishes later is blocked
        when that publish is read (_feed calls _apply_alarm). The session holds that publish,
        and everything read after it, until the alarm clears (as RabbitMQ's reader, which
        stops at the first publish it reads while blocked, even inside one read's bytes).
        """
        self.alarm = reason
        session = self.session
        if session is not None:
            session.hold_publishes = True
        if session is not None and session.conn.content_in_progress():
            self._apply_alarm()
            self.flush()

    def alarm_off(self) -> None:
        self.alarm = None
        session = self.session
        if session is not None:
            session.hold_publishes = False
        if self._alarm_notified and session is not None and session.conn.state is ConnState.OPEN:
            session.conn.send_method(0, spec.ConnectionUnblocked())
            self.flush()
        self._alarm_notified = False
        if self._alarm_paused:
            self._alarm_paused = False
            self._update_reading()
        if self._input_pending:
            self._continue_soon()  # the held publish first, then what was read after it

    def _apply_alarm(self) -> None:
        """As RabbitMQ 3.10's reader: while an alarm is on, a connection that publishes (or is
        part-way through a message) stops being read and, if it announced the capability, gets
        connection.blocked then, with the reason of the alarms on at that moment. Idle and
        consumer-only connections are never blocked or told; nor is one that published only
        before the alarm, until it publishes again. An alarm raised while a connection is
        blocked sends nothing more; connection.unblocked goes only to connections told
        connection.blocked, once the last alarm clears."""
        session = self.session
        if session is None or session.conn.state is not ConnState.OPEN or self._alarm_paused:
            return
        if not (session.published or session.conn.content_in_progress()):
            return
        self._alarm_paused = True
        self._update_reading()
        if not self._alarm_notified:
            caps = session.conn.client_properties.get("capabilities") or {}
            if caps.get("connection.blocked"):
                self._alarm_notified = True
                session.conn.send_method(0, spec.ConnectionBlocked(self.alarm or ""))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshaking is not None:
            self.handshaking.pop(self, None)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.connections.discard(self)
        session = self.session
        if session is not None:
            guarded(f"releasing connection {self.peer}", session.connection_lost)
            session.out.clear()
            session.on_wake = None
        log.debug("connection %s lost (%s)", self.peer, exc)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.set_writable(False)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.set_writable(True)
            self.flush()
            if self._input_pending:
                self._continue_soon()

    # ----------------------------------------------------------------- output

    def pending_output(self) -> int:
        """Bytes waiting to go to this peer: in the session's `out` and the socket buffer."""
        session, transport = self.session, self.transport
        pending = session.out_bytes if session is not None else 0
        if transport is not None and not transport.is_closing():
            pending += transport.get_write_buffer_size()
        return pending

    def _on_wake(self, session: "Session") -> None:
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        session = self.session
        transport = self.transport
        if session is None or transport is None:
            return
        session.wake_pending = False
        out = session.out
        if out:
            data = b"".join(out)
            out.clear()
            if not transport.is_closing():
                transport.write(data)
                self._last_sent = self.broker.clock()
            session.output_taken()
            if self._input_pending and session.writable:
                self._continue_soon()
        state = session.conn.state
        if state is ConnState.CLOSED:
            if transport.is_closing():
                pass
            elif session.conn.hangup:
                if not self._heartbeat_started and session.conn.close_error is not None:
                    log.info(
                        "closing %s in the handshake: %s", self.peer, session.conn.close_error.reply_text
                    )
                transport.close()
            elif "linger" not in self._timers:
                # Keep reading until the peer closes (eof_received) or the linger runs out.
                close_timer = self._timers.pop("close", None)
                if close_timer is not None:
                    close_timer.cancel()
                self._timers["linger"] = self.loop.call_later(CLOSED_LINGER, transport.close)
        elif state is ConnState.CLOSING and not self._closing:
            self._closing = True
            self._timers["close"] = self.loop.call_later(CLOSE_OK_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def shutdown(self, reason: str = "shutdown") -> None:
        """Close this connection because the broker is stopping (320 CONNECTION_FORCED)."""
        session = self.session
        if session is None:
            return
        if session.conn.state is ConnState.OPEN:
            session.conn.close(
                ConnectionForced(f"broker forced connection closure with reason '{reason}'")
            )
            session.release()
            self.flush()
        else:
            self.abort()

    # ------------------------------------------------------------- timers

    def _handshake_timeout(self) -> None:
        session = self.session
        if session is not None and session.conn.state not in (ConnState.OPEN, ConnState.CLOSED):
            log.info("handshake timeout for %s", self.peer)
            self.abort()

    def _opened(self) -> None:
        """connection.open-ok went out: the peer is no longer a handshake to bound."""
        if self.handshaking is not None:
            self.handshaking.pop(self, None)
        timer = self._timers.pop("handshake", None)
        if timer is not None:
            timer.cancel()
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        self._heartbeat_started = True
        assert self.session is not None
        interval = self.session.conn.heartbeat
        if interval > 0:
            self._arm_heartbeat(interval)

    def _arm_heartbeat(self, interval: int) -> None:
        broker = self.broker
        self._timers["heartbeat"] = broker.timers.call_at(
            broker.clock() + interval / 2, lambda: self._heartbeat_tick(interval)
        )

    def _heartbeat_tick(self, interval: int) -> None:
        session = self.session
        if session is None or self.transport is None or self.transport.is_closing():
            return
        if session.conn.state is ConnState.CLOSED:
            return  # nothing more goes out after close-ok
        now = self.broker.clock()
        if not self._reading:
            self._last_recv = now  # not reading it on purpose: its silence is ours
        if now - self._last_recv > 2 * interval:
            log.warning(
                "missed heartbeats from client %s, timeout: %ds", self.peer, interval
            )
            self.abort()
            return
        if now - self._last_sent >= interval / 2:
            session.conn.send_heartbeat()
            self.flush()
        self._arm_heartbeat(interval)
