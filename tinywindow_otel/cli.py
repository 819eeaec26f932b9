"""The ``tinywindow-otel`` command: ``demo`` (and ``docs``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .server import DEFAULT_HOST, DEFAULT_PORT, MetricsServer


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with MetricsServer(args.host, args.port) as server:
        print(f"tinywindow-otel demo: serving {server.url} (Ctrl-C to stop)", flush=True)
        demo.run(stop, ticks_per_second=args.rate, seed=args.seed)
    print("tinywindow-otel demo: stopped", flush=True)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .catalog import render_markdown

    sys.stdout.write(render_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinywindow-otel", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a simulated trading workload serving /metrics")
    demo.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    demo.add_argument("--rate", type=float, default=5.0, help="simulation ticks per second (default 5)")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible run")
    demo.set_defaults(func=_demo)

    docs = commands.add_parser("docs", help="print docs/metrics.md, generated from the catalog")
    docs.set_defaults(func=_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
