"""``minimq worker module:app`` and ``python -m minimq.worker module:app``."""
from __future__ import annotations

import argparse
import logging
import sys

from .app import App, load_app
from .process import setup_logging
from .status import default_status_file, main as status_main
from .supervisor import Supervisor, SupervisorConfig

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minimq worker",
        description="Run the consumers and periodic jobs of a minimq.worker.App in supervised "
                    "worker processes.",
        epilog="`minimq worker status [NAME]` shows what running runners are doing.",
    )
    p.add_argument("app", help="the App to run, as package.module:attribute (attribute "
                               "defaults to 'app')")
    p.add_argument("--url", help="broker URL (default: $MINIMQ_URL, else the App's url, else "
                                 "amqp://guest:guest@127.0.0.1:5672/)")
    p.add_argument("-c", "--consumer", action="append", default=[], metavar="NAME",
                   help="run only this consumer (repeatable; default: all)")
    p.add_argument("-p", "--processes", action="append", default=[], metavar="[NAME=]N",
                   help="processes per consumer: N for all, NAME=N for one (repeatable)")
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--no-scheduler", action="store_true",
                       help="do not run the periodic-job scheduler in this runner")
    sched.add_argument("--scheduler-only", action="store_true",
                       help="run only the scheduler, no consumers")
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds in-flight handlers get to finish on SIGTERM/SIGINT "
                        "(default 30)")
    p.add_argument("--status-interval", type=float, default=30.0,
                   help="seconds between status log lines; 0 turns them off (default 30)")
    p.add_argument("--max-restarts", type=int, default=5,
                   help="deaths of one worker within --restart-window that count as a crash "
                        "loop and stop the runner (default 5)")
    p.add_argument("--restart-window", type=float, default=60.0,
                   help="seconds (default 60)")
    p.add_argument("--restart-backoff", type=float, default=0.5,
                   help="first restart delay, doubling per consecutive crash (default 0.5)")
    p.add_argument("--status-file", metavar="PATH",
                   help="keep the runner's status here for `minimq worker status` (default: "
                        "<status dir>/<app name>.<pid>.json; 'none' to keep none)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"])
    p.add_argument("--list", action="store_true",
                   help="print the consumers and periodic jobs and exit")
    return p


def _processes(app: App, selected: list[str], options: list[str]) -> dict[str, int]:
    counts = {name: app.consumers[name].processes for name in selected}
    for option in options:
        name, eq, number = option.rpartition("=")
        try:
            n = int(number)
        except ValueError:
            raise SystemExit(f"minimq worker: --processes {option!r}: not a number") from None
        if n < 0:
            raise SystemExit(f"minimq worker: --processes {option!r}: must be >= 0")
        if not eq:
            counts = {k: n for k in counts}
        elif name not in counts:
            raise SystemExit(f"minimq worker: --processes {option!r}: no consumer {name!r} "
                             f"selected (have: {', '.join(counts) or 'none'})")
        else:
            counts[name] = n
    return {k: v for k, v in counts.items() if v > 0}


def describe(app: App) -> str:
    """The --list output: one line per consumer and periodic job."""
    lines = []
    for c in app.consumers.values():
        binds = [f"{b.exchange}{f' ({c.exchange_type})' if b.exchange == c.exchange else ''} "
                 f"{b.routing_key!r}{f' {b.arguments}' if b.arguments else ''}"
                 for b in c.bindings]
        bind = f" <- {'; '.join(binds)}" if binds else ""
        r = c.retry
        lines.append(f"consumer {c.name}: queue {c.describe_queue}{bind}; processes={c.processes} "
                     f"prefetch={c.prefetch} concurrency={c.concurrency} "
                     f"{'async' if c.is_async else 'sync'}; retries={r.retries} "
                     f"backoff={r.backoff}s x{r.factor} max {r.max_backoff}s ({r.mode})")
    for j in app.periodics.values():
        when = f"every {j.every}s" if j.every is not None else f"cron {j.cron.expression!r}"  # type: ignore[union-attr]
        target = f" -> {j.exchange or '(default)'}/{j.routing_key}" if j.publishes else ""
        lines.append(f"periodic {j.name}: {when}{target}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # `minimq worker status [NAME]`
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, "supervisor")
    try:
        app = load_app(args.app)
    except Exception as exc:  # the user's import error: say which and stop
        print(f"minimq worker: cannot load {args.app}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    if args.list:
        print(describe(app))
        return 0
    unknown = [n for n in args.consumer if n not in app.consumers]
    if unknown:
        print(f"minimq worker: no consumer {', '.join(unknown)} in {args.app} "
              f"(have: {', '.join(app.consumers) or 'none'})", file=sys.stderr)
        return 2
    selected = [] if args.scheduler_only else (args.consumer or list(app.consumers))
    config = SupervisorConfig(
        app_ref=args.app,
        url=app.resolve_url(args.url),
        processes=_processes(app, selected, args.processes),
        scheduler=not args.no_scheduler,
        grace=args.grace,
        log_level=args.log_level,
        status_interval=args.status_interval,
        max_restarts=args.max_restarts,
        restart_window=args.restart_window,
        restart_backoff=args.restart_backoff,
        status_file=None if args.status_file == "none"
        else args.status_file or default_status_file(app.name),
    )
    code = Supervisor(app, config).run()
    logging.shutdown()
    return code
