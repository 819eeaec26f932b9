"""The ``tinywindow-otel`` command: ``demo``, ``stack``, ``hash-password`` and ``docs``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ..server import DEFAULT_HOST, DEFAULT_PORT, MetricsServer


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with MetricsServer(args.host, args.port, tls=_tls(args), auth=_auth(args)) as server:
        print(f"tinywindow-otel demo: serving {server.url} (Ctrl-C to stop)", flush=True)
        demo.run(stop, ticks_per_second=args.rate, seed=args.seed)
    print("tinywindow-otel demo: stopped", flush=True)
    return 0


def _tls(args: argparse.Namespace):
    """TLS from the flags; None leaves it to the environment (security.TLSConfig.from_env)."""
    from ..security import TLSConfig

    if not args.tls_cert:
        if args.tls_key or args.tls_client_ca:
            raise SystemExit("tinywindow-otel demo: --tls-key/--tls-client-ca need --tls-cert")
        return None
    return TLSConfig(args.tls_cert, args.tls_key, args.tls_client_ca)


def _auth(args: argparse.Namespace):
    from ..security import ENV_AUTH_HASH, BasicAuth, read_hash_file

    if not args.basic_auth_user:
        return None
    stored = read_hash_file(args.basic_auth_hash_file) if args.basic_auth_hash_file else os.environ.get(ENV_AUTH_HASH)
    if not stored:
        raise SystemExit(f"tinywindow-otel demo: --basic-auth-user needs --basic-auth-hash-file or {ENV_AUTH_HASH}")
    return BasicAuth(args.basic_auth_user, stored)


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from ..security import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("tinywindow-otel hash-password: empty password", file=sys.stderr)
        return 2
    print(hash_password(password, iterations=args.iterations))
    return 0


def _stack(args: argparse.Namespace) -> int:
    from . import stack

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        return stack.run(host=args.host, port=args.port, prometheus_port=args.prometheus_port,
                         alertmanager_port=args.alertmanager_port, interval=args.interval,
                         fast_alerts=args.fast_alerts, assets=args.assets, rate=args.rate, seed=args.seed,
                         stop=stop, out=lambda line: print(line, flush=True),
                         collector=args.collector, otelcol=args.otelcol)
    except stack.StackError as exc:
        print(f"tinywindow-otel stack: {exc}", file=sys.stderr)
        return 1


def _docs(args: argparse.Namespace) -> int:
    from ..catalog import render_markdown

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
    demo.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (env TINYWINDOW_OTEL_TLS_CERT_FILE)")
    demo.add_argument("--tls-key", help="PEM private key for --tls-cert (if not in the cert file)")
    demo.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    demo.add_argument("--basic-auth-user", help="require HTTP basic auth on /metrics with this username")
    demo.add_argument("--basic-auth-hash-file",
                      help="file holding the password hash (see hash-password; "
                           "else env TINYWINDOW_OTEL_BASIC_AUTH_PASSWORD_HASH)")
    demo.set_defaults(func=_demo)

    hashing = commands.add_parser("hash-password", help="read a password from stdin, print its hash for basic auth")
    hashing.add_argument("--iterations", type=int, default=200_000, help="PBKDF2 iterations (default 200000)")
    hashing.set_defaults(func=_hash_password)

    stack = commands.add_parser("stack", help="run the demo with a local Prometheus and Alertmanager (no docker)")
    stack.add_argument("--host", default=DEFAULT_HOST, help=f"loopback address for all three (default {DEFAULT_HOST})")
    stack.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"demo /metrics port (default {DEFAULT_PORT}; 0 = free)")
    stack.add_argument("--prometheus-port", type=int, default=9090, help="default 9090; 0 = free")
    stack.add_argument("--alertmanager-port", type=int, default=9093, help="default 9093; 0 = free")
    stack.add_argument("--interval", default="5s", help="scrape and rule evaluation interval (default 5s)")
    stack.add_argument("--fast-alerts", action="store_true", help="shorten every non-zero alert `for:` to 10s")
    stack.add_argument("--assets", default=None, help="directory holding alerts/ (default: cwd or the checkout)")
    stack.add_argument("--rate", type=float, default=5.0, help="simulation ticks per second (default 5)")
    stack.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible run")
    stack.add_argument("--collector", action="store_true",
                       help="the demo pushes OTLP to an OpenTelemetry Collector (collector/otelcol.yaml), "
                            "which remote-writes to Prometheus")
    stack.add_argument("--otelcol", default=None,
                       help="collector binary for --collector (default: otelcol-tinywindow or otelcol-contrib on PATH)")
    stack.set_defaults(func=_stack)

    docs = commands.add_parser("docs", help="print docs/metrics.md, generated from the catalog")
    docs.set_defaults(func=_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)
