"""Command line: `minimq`, `python -m minimq` and `python server.py` all land here."""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import signal
import sys
import time

import minimq
from minimq.broker import Broker
from minimq.broker.access import FULL, AccessControl
from minimq.broker.definitions import DefinitionsError, export_definitions, import_definitions
from minimq.config import Config, ConfigError, apply_access, load_config
from minimq.server import Server, make_ssl_context
from minimq.server.alarms import DEFAULT_DISK_FREE_LIMIT, parse_disk_free_limit
from minimq.server.app import physical_memory
from minimq.server.limits import ServerLimits
from minimq.store import DurableStore, StoreLocked
from minimq.store.definitions_file import load_definitions, save_definitions

log = logging.getLogger("minimq")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minimq", description="minimq AMQP 0-9-1 broker",
        epilog="`minimq worker module:app` runs worker processes instead (see `minimq worker -h`); "
        "`minimq definitions export|import FILE` moves a running broker's definitions.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5672, help="AMQP port; 0 picks a free one (default 5672)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    p.add_argument("--tls-cert", help="PEM certificate: also serve AMQPS")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert (if not in the cert file)")
    p.add_argument("--tls-port", type=int, default=5671, help="AMQPS port (default 5671; 0 picks one)")
    p.add_argument("--heartbeat", type=int, default=60, help="heartbeat interval offered to clients, seconds")
    p.add_argument("--frame-max", type=int, default=131072, help="largest frame offered to clients, bytes")
    p.add_argument("--channel-max", type=int, default=2047, help="most channels per connection")
    p.add_argument(
        "--memory-high-watermark", type=float, default=0.4, metavar="LIMIT",
        help="block publishers above this much memory: a fraction of RAM (below 1) or bytes "
        "(default 0.4, as RabbitMQ; 0 disables)",
    )
    p.add_argument(
        "--disk-free-limit", type=_disk_free_limit, default=DEFAULT_DISK_FREE_LIMIT, metavar="LIMIT",
        help="block publishers when the data dir's disk has less free space than this: bytes, "
        "a unit (500MB, 1GB, 2GiB) or a fraction of the disk (0.05); default 50MB as RabbitMQ; "
        "0 disables",
    )
    p.add_argument(
        "--config", metavar="FILE",
        help="a TOML file with any of these options (same names) plus users, vhosts, permissions "
        "and limits; flags win over it (see README, Access control)",
    )
    p.add_argument(
        "--max-message-size", type=int, default=128 * 1024 * 1024, metavar="BYTES",
        help="largest message body accepted (default 134217728, 128 MiB, as RabbitMQ 3.10); "
        "a larger one closes the channel with 406 PRECONDITION_FAILED",
    )
    p.add_argument(
        "--max-connections", type=int, default=0, metavar="N",
        help="most open connections; more are closed at once (default 0: unlimited)",
    )
    p.add_argument(
        "--max-unauthenticated", type=int, default=1024, metavar="N",
        help="most connections still in the handshake; a new one beyond it drops the oldest "
        "(default 1024)",
    )
    p.add_argument(
        "--handshake-timeout", type=float, default=10.0, metavar="SECONDS",
        help="time from accept to connection.open (default 10, as RabbitMQ)",
    )
    p.add_argument(
        "--tls-handshake-timeout", type=float, default=5.0, metavar="SECONDS",
        help="time a TLS client has to finish its handshake (default 5, as RabbitMQ)",
    )
    p.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD",
        help="add a user (repeatable) with full permissions on every --vhost (on / without --vhost); "
        "a fresh broker also has guest/guest, with full permissions on /",
    )
    p.add_argument(
        "--vhost", action="append", default=[], metavar="NAME",
        help="add a virtual host besides / (repeatable)",
    )
    p.add_argument(
        "--loopback-users", metavar="NAMES", default=None,
        help="comma-separated users who may only connect through a loopback address (default "
        "guest, as RabbitMQ; an empty value lets everyone connect from anywhere)",
    )
    p.add_argument(
        "--definitions", metavar="FILE",
        help="load a RabbitMQ definitions JSON at start (what `rabbitmqctl export_definitions` "
        "writes): users, vhosts, permissions, limits, exchanges, queues, bindings",
    )
    p.add_argument(
        "--management-port", type=int, default=None, metavar="PORT",
        help="HTTP management API, web UI and /metrics on the AMQP host (default: the AMQP port "
        "+ 10000, i.e. 15672, or a free port with --port 0; 0 picks one)",
    )
    p.add_argument("--no-management", action="store_true", help="do not serve the management API")
    p.add_argument(
        "--management-rate-interval", type=float, default=5.0, metavar="SECONDS",
        help="how often message rates are sampled (default 5, as RabbitMQ)",
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument(
        "--data-dir",
        help="keep durable state here (default: $MINIMQ_DATA_DIR, else $XDG_DATA_HOME/minimq/PORT, "
        "else ~/.local/share/minimq/PORT; with --port 0, in memory)",
    )
    store.add_argument("--in-memory", action="store_true", help="keep nothing on disk (a throwaway broker)")
    p.add_argument("--version", action="version", version=f"minimq {minimq.__version__}")
    return p


def _disk_free_limit(text: str) -> int | float:
    try:
        return parse_disk_free_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def memory_limit(watermark: float) -> int | None:
    """--memory-high-watermark as bytes: below 1 a fraction of physical memory."""
    if watermark <= 0:
        return None
    if watermark < 1:
        total = physical_memory()
        return int(total * watermark) if total else None
    return int(watermark)


def users_from(specs: list[str]) -> dict[str, str]:
    """--user NAME:PASSWORD flags (the password may contain ':')."""
    users: dict[str, str] = {}
    for spec_ in specs:
        name, sep, password = spec_.partition(":")
        if not sep or not name:
            raise SystemExit(f"minimq: --user wants NAME:PASSWORD, got {spec_!r}")
        users[name] = password
    return users


def default_data_dir(port: int) -> str | None:
    """Where durable state lives when --data-dir is not given (None: keep it in memory).

    One directory per port, so brokers on different ports are different nodes, as RabbitMQ
    nodes are. A broker on a random port (--port 0) cannot be found again after a restart, so
    it is a throwaway broker and keeps nothing, unless MINIMQ_DATA_DIR names a directory.
    """
    env = os.environ.get("MINIMQ_DATA_DIR")
    if env:
        return env
    if port == 0:
        return None
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "minimq", str(port))


def open_store(path: str) -> tuple[DurableStore, object]:
    started = time.monotonic()
    store = DurableStore(path)
    recovered = store.recover()
    took = time.monotonic() - started
    # Said at info level when there was something to recover (how long it took matters
    # then); a fresh data dir is not news.
    level = logging.INFO if recovered.queues or recovered.exchanges else logging.DEBUG
    log.log(
        level,
        "data dir %s: recovered %d queues, %d exchanges, %d messages in %.2fs",
        store.path, len(recovered.queues), len(recovered.exchanges), recovered.message_count, took,
    )
    for report in recovered.reports:
        if report.skipped:
            log.error("%s: skipped %d corrupt stretch(es): %s", report.path, len(report.skipped), report.skipped)
    return store, recovered


def management_port(args: argparse.Namespace) -> int:
    """--management-port, or RabbitMQ's convention: the AMQP port + 10000 (5672 -> 15672),
    a free port for a broker on a free port."""
    if args.management_port is not None:
        return args.management_port
    if args.port == 0 or args.port + 10000 > 65535:
        return 0
    return args.port + 10000


async def start_management(server: Server, args: argparse.Namespace):
    if args.no_management:
        return None
    from minimq.admin import ManagementServer

    management = ManagementServer(
        server, port=management_port(args), sample_interval=args.management_rate_interval
    )
    try:
        await management.start()
    except OSError as exc:
        if args.management_port is not None:  # asked for explicitly: a real error
            await server.stop()
            raise
        log.warning("management API not started (%s); AMQP is served as usual", exc)
        return None
    return management


def loopback_users(args: argparse.Namespace, config: Config | None) -> tuple[str, ...]:
    if args.loopback_users is not None:
        return tuple(n.strip() for n in args.loopback_users.split(",") if n.strip())
    if config is not None and config.loopback_users is not None:
        return tuple(config.loopback_users)
    return ("guest",)


def configure_access(broker: Broker, args: argparse.Namespace) -> None:
    """What the start asks for, over what the data dir kept: --definitions, then the config
    file, then the flags (each wins over the one before).

    A --user gets full permissions on every --vhost (on '/' when no --vhost is given), so
    the flags keep meaning what they did before access control: the user can use the
    vhosts it was started with, and nothing else.
    """
    access = broker.access
    if args.definitions:
        try:
            with open(args.definitions, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"minimq: cannot read definitions {args.definitions}: {exc}") from None
        try:
            import_definitions(broker, data)
        except DefinitionsError as exc:
            raise SystemExit(f"minimq: {args.definitions}: {exc}") from None
        log.info("loaded definitions from %s", args.definitions)
    if args.config_file is not None:
        created: list[str] = []
        try:
            apply_access(access, args.config_file, created)
        except (ValueError, KeyError) as exc:
            raise SystemExit(f"minimq: config file: {exc}") from None
        for name in created:
            broker.add_vhost(name)
    for name in args.vhost:
        broker.add_vhost(name)
    targets = args.vhost or ["/"]
    for name, password in users_from(args.user).items():
        old = access.users.get(name)
        access.add_user(name, password, tags=old.tags if old is not None else ())
        for vhost in targets:
            broker.add_vhost(vhost)
            access.set_permissions(name, vhost, FULL.configure, FULL.write, FULL.read)


def keep_access_in(broker: Broker, data_dir: str) -> None:
    """Save users, vhosts, permissions and limits in the data dir now and after every change."""

    def save() -> None:
        try:
            save_definitions(data_dir, export_definitions(broker, topology=False, operator_policies=True))
        except OSError as exc:
            log.error("cannot save access control to %s: %s (the change holds until restart)", data_dir, exc)
            raise

    save()
    broker.access.on_change = save


async def serve(args: argparse.Namespace) -> None:
    # Recovery builds millions of long-lived objects: the cyclic GC would rescan them over
    # and over (recovery time grows faster than the log). Pause it, then freeze what was
    # recovered so later collections skip it.
    gc.disable()
    try:
        data_dir = None if args.in_memory else (args.data_dir or default_data_dir(args.port))
        store, recovered = open_store(data_dir) if data_dir else (None, None)
        saved = load_definitions(data_dir) if data_dir else None
        # A fresh node starts as RabbitMQ's does (guest, '/'); a known one as it was left.
        broker = Broker(
            clock=time.time, heartbeat=args.heartbeat, frame_max=args.frame_max, channel_max=args.channel_max,
            store=store, access=AccessControl() if saved is not None else AccessControl.default(),
            vhosts=() if saved is not None else ("/",), loopback_users=loopback_users(args, args.config_file),
            max_message_size=args.max_message_size,
        )
        if saved is not None:
            import_definitions(broker, saved)
        if recovered is not None:
            broker.restore(recovered)
            del recovered
        configure_access(broker, args)
        if data_dir:
            keep_access_in(broker, data_dir)
    finally:
        gc.enable()
    gc.freeze()
    ssl_context = make_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    server = Server(
        broker, args.host, args.port, ssl_context=ssl_context, tls_port=args.tls_port,
        memory_limit=memory_limit(args.memory_high_watermark),
        disk_free_limit=args.disk_free_limit or None,
        limits=ServerLimits(
            handshake_timeout=args.handshake_timeout,
            tls_handshake_timeout=args.tls_handshake_timeout,
            max_connections=max(0, args.max_connections),
            max_unauthenticated=max(1, args.max_unauthenticated),
        ),
    )
    await server.start()
    management = await start_management(server, args)
    print(server.banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    await stop.wait()
    log.info("shutting down")
    if management is not None:
        await management.stop()
    await server.stop()
    if store is not None:
        store.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags over the --config file over the built-in defaults."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    config = load_config(known.config) if known.config else None
    if config is not None:
        options = dict(config.options)
        if any(a == "--data-dir" or a.startswith("--data-dir=") for a in argv):
            options.pop("in_memory", None)  # the flag wins over the file's in-memory
        if "--in-memory" in argv:
            options.pop("data_dir", None)
        parser.set_defaults(**options)
    args = parser.parse_args(argv)
    if args.log_level not in ("debug", "info", "warning", "error", "critical"):
        parser.error(f"invalid log-level {args.log_level!r}")
    args.config_file = config
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":  # `minimq worker module:app ...`: the worker runner
        from minimq.worker.cli import main as worker_main

        return worker_main(argv[1:])
    if argv and argv[0] == "definitions":  # `minimq definitions export|import FILE`
        from minimq.admin.cli import main as definitions_main

        return definitions_main(argv[1:])
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        print(f"minimq: {exc}", file=sys.stderr)
        return 2
    if args.tls_key and not args.tls_cert:
        print("minimq: --tls-key needs --tls-cert", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args))
    except (OSError, StoreLocked) as exc:
        print(f"minimq: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally catches it
        pass
    return 0
