"""`minimq definitions export FILE` / `minimq definitions import FILE`: a running broker's
definitions (RabbitMQ's JSON: users, vhosts, permissions, exchanges, queues, bindings) over
its management API. The same files work with RabbitMQ (`rabbitmqctl import_definitions`,
`rabbitmqadmin import`), in both directions.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from urllib.parse import quote


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minimq definitions", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("file", help="the JSON file to write or read ('-': stdout or stdin)")
    p.add_argument("--url", default="http://127.0.0.1:15672/",
                   help="the broker's management API (default http://127.0.0.1:15672/)")
    p.add_argument("--user", default="guest", help="an administrator user (default guest)")
    p.add_argument("--password", default="guest", help="its password (default guest)")
    p.add_argument("--vhost", help="only this virtual host's definitions")
    return p


def _request(args: argparse.Namespace, method: str, body: bytes | None = None) -> bytes:
    path = "api/definitions" + (f"/{quote(args.vhost, safe='')}" if args.vhost else "")
    req = urllib.request.Request(args.url.rstrip("/") + "/" + path, data=body, method=method)
    token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.action == "export":
            data = json.loads(_request(args, "GET"))
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
            if args.file == "-":
                sys.stdout.write(text)
            else:
                with open(args.file, "w", encoding="utf-8") as f:
                    f.write(text)
                print(f"exported definitions from {args.url} to {args.file}", file=sys.stderr)
            return 0
        raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()
        try:
            json.loads(raw)
        except ValueError as exc:
            print(f"minimq definitions: {args.file} is not JSON: {exc}", file=sys.stderr)
            return 1
        _request(args, "POST", raw)
        print(f"imported definitions from {args.file} into {args.url}", file=sys.stderr)
        return 0
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("reason")
        except ValueError:
            reason = None
        print(f"minimq definitions: {exc.code} {reason or exc.reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"minimq definitions: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
