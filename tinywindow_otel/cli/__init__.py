"""The ``tinywindow-otel`` command line: demo, stack, assets, hash-password, docs."""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import sys
import threading
from typing import NoReturn

from .. import __version__
from ..security import DEFAULT_ITERATIONS, MIN_ITERATIONS
from ..server import DEFAULT_HOST, DEFAULT_PORT, MetricsServer

DESCRIPTION = "TinyWindow trading metrics on OpenTelemetry, with the monitoring assets to use them."

EPILOG = """\
examples:
  tinywindow-otel demo                                    # http://127.0.0.1:8000/metrics
  tinywindow-otel stack --fast-alerts --scenario breach   # alerts firing; needs prometheus, alertmanager
  tinywindow-otel assets export ./monitoring              # ready-to-mount folder with a README

Run `tinywindow-otel COMMAND --help` for a command's options.
"""


class UsageError(Exception):
    """Options that do not fit together: reported like argparse's own errors (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line and a hint (not the whole usage text), exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        print(f"hint: see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


# Bounds of the numeric options, checked when the command line is read, before anything starts.
MAX_RATE = 1000.0            # ticks per second; beyond it the simulation loop only burns CPU
MIN_INTERVAL_MS = 1_000      # a Prometheus evaluating rules more often than every second only burns CPU
MAX_INTERVAL_MS = 15_000     # the rules' shortest window (45s) needs three samples
MAX_ITERATIONS = 10_000_000  # PBKDF2 rounds; beyond it hashing (and each first verification) takes minutes


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: a number from 0 to 65535") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: a number from 0 to 65535 (0 = any free port)")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_RATE):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: ticks per second above 0 and at most {MAX_RATE:g}")
    return value


def _interval(text: str) -> str:
    from .stack import StackError, duration_millis

    try:
        millis = duration_millis(text)
    except StackError:
        millis = -1
    if not MIN_INTERVAL_MS <= millis <= MAX_INTERVAL_MS:
        raise argparse.ArgumentTypeError(
            f"invalid interval {text!r}: a duration from {MIN_INTERVAL_MS // 1000}s to {MAX_INTERVAL_MS // 1000}s "
            "such as 5s or 1500ms")
    return text


def _iterations(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not MIN_ITERATIONS <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"invalid iterations {text!r}: a whole number from {MIN_ITERATIONS} (the fewest /metrics accepts) "
            f"to {MAX_ITERATIONS}")
    return value


def _assets_dir(text: str) -> str:
    from .stack import StackError, find_assets

    try:
        return str(find_assets(text))
    except StackError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _executable(text: str) -> str:
    import shutil

    found = shutil.which(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an executable program")
    return found


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with MetricsServer(args.host, args.port, tls=_tls(args), auth=_auth(args)) as server:
        print(f"tinywindow-otel demo: serving {server.url} (Ctrl-C to stop)", flush=True)
        demo.run(stop, ticks_per_second=args.rate, seed=args.seed, scenario=args.scenario,
                 out=lambda line: print(line, flush=True))
    print("tinywindow-otel demo: stopped", flush=True)
    return 0


def _tls(args: argparse.Namespace):
    """TLS from the flags; None leaves it to the environment (security.TLSConfig.from_env)."""
    from ..security import TLSConfig

    if not args.tls_cert:
        if args.tls_key or args.tls_client_ca:
            raise UsageError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    return TLSConfig(args.tls_cert, args.tls_key, args.tls_client_ca)


def _auth(args: argparse.Namespace):
    from ..security import ENV_AUTH_HASH, BasicAuth, read_hash_file

    if not args.basic_auth_user:
        return None
    stored = read_hash_file(args.basic_auth_hash_file) if args.basic_auth_hash_file else os.environ.get(ENV_AUTH_HASH)
    if not stored:
        raise UsageError(f"--basic-auth-user needs --basic-auth-hash-file or {ENV_AUTH_HASH}")
    return BasicAuth(args.basic_auth_user, stored)


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from ..security import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("empty password")
    print(hash_password(password, iterations=args.iterations))
    return 0


def _stack(args: argparse.Namespace) -> int:
    from . import stack

    # Everything that can be checked is checked before the demo serves anything.
    chosen = [port for port in (args.port, args.prometheus_port, args.alertmanager_port) if port]
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"--port, --prometheus-port and --alertmanager-port must differ (got {args.port}, "
                         f"{args.prometheus_port}, {args.alertmanager_port})")
    stack.find_assets(args.assets)
    stack.find_binary(stack.PROMETHEUS_BINARIES)
    stack.find_binary(stack.ALERTMANAGER_BINARIES)
    if args.collector and not args.otelcol:
        stack.find_binary(stack.COLLECTOR_BINARIES)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return stack.run(host=args.host, port=args.port, prometheus_port=args.prometheus_port,
                     alertmanager_port=args.alertmanager_port, interval=args.interval,
                     fast_alerts=args.fast_alerts, assets=args.assets, rate=args.rate, seed=args.seed,
                     stop=stop, out=lambda line: print(line, flush=True),
                     collector=args.collector, otelcol=args.otelcol, scenario=args.scenario)


def _assets_export(args: argparse.Namespace) -> int:
    from . import assets

    written = assets.export(args.directory, force=args.force, version=__version__)
    print(f"tinywindow-otel assets: wrote {len(written)} files to {args.directory} (see its README.md)")
    return 0


def _assets_path(args: argparse.Namespace) -> int:
    from . import assets

    print(assets.path())
    return 0


def _docs(args: argparse.Namespace) -> int:
    from ..catalog import render_markdown

    sys.stdout.write(render_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinywindow-otel", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="simulate a trading workload and serve its /metrics",
                               description="Simulate a trading workload and serve every metric on /metrics "
                                           "until Ctrl-C: trades, P&L and risk values, API calls, agent "
                                           "decisions; orders at two venues (latency, fills, slippage, "
                                           "rejections), exchange feeds and rate limits, LLM calls (tokens, "
                                           "cost, time to first token) and agent calibration (outcomes linked "
                                           "to decisions). Every panel of the packaged dashboards has data.")
    demo.add_argument("--host", default=DEFAULT_HOST,
                      help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 for all interfaces)")
    demo.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port)")
    demo.add_argument("--rate", type=_rate, default=5.0, help=f"simulation ticks per second (default 5, at most {MAX_RATE:g})")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible run")
    demo.add_argument("--scenario", choices=("calm", "breach"), default="calm",
                      help="calm (default): inside every alert threshold; breach: drive each trading/API alert "
                           "over its threshold in turn and back (with `stack --fast-alerts`, each fires and "
                           "resolves within 5 minutes)")
    demo.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (or env TINYWINDOW_OTEL_TLS_CERT_FILE)")
    demo.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert, if not in the certificate file")
    demo.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mutual TLS)")
    demo.add_argument("--basic-auth-user", metavar="NAME", help="require HTTP basic auth on /metrics with this username")
    demo.add_argument("--basic-auth-hash-file", metavar="FILE",
                      help="file holding the password hash from `tinywindow-otel hash-password` "
                           "(or env TINYWINDOW_OTEL_BASIC_AUTH_PASSWORD_HASH)")
    demo.set_defaults(func=_demo)

    stack = commands.add_parser("stack", help="the demo plus a local Prometheus and Alertmanager: watch alerts fire",
                                description="Run the demo with a local Prometheus and Alertmanager (no docker), "
                                            "using the packaged alert rules; every Alertmanager notification is "
                                            "printed here. Needs the prometheus and alertmanager programs "
                                            "(Debian: apt-get install prometheus prometheus-alertmanager).")
    stack.add_argument("--host", default=DEFAULT_HOST, help=f"loopback address for all three (default {DEFAULT_HOST})")
    stack.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"demo /metrics port (default {DEFAULT_PORT}; 0 = any free port)")
    stack.add_argument("--prometheus-port", type=_port, default=9090, help="Prometheus port (default 9090; 0 = any free port)")
    stack.add_argument("--alertmanager-port", type=_port, default=9093, help="Alertmanager port (default 9093; 0 = any free port)")
    stack.add_argument("--interval", type=_interval, default="5s",
                       help="scrape and rule evaluation interval, 1s to 15s (default 5s)")
    stack.add_argument("--fast-alerts", action="store_true", help="shorten every alert's waiting time (`for:`) to 10s")
    stack.add_argument("--assets", metavar="DIR", type=_assets_dir, default=None,
                       help="folder with alerts/ to use instead of the packaged one "
                            "(e.g. one written by `assets export`)")
    stack.add_argument("--rate", type=_rate, default=5.0, help=f"simulation ticks per second (default 5, at most {MAX_RATE:g})")
    stack.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible run")
    stack.add_argument("--scenario", choices=("calm", "breach"), default="calm",
                       help="demo scenario: calm (default) pages nothing; breach shows each alert fire and resolve "
                            "(with --fast-alerts, within 5 minutes)")
    stack.add_argument("--collector", action="store_true",
                       help="the demo pushes OTLP to an OpenTelemetry Collector (collector/otelcol.yaml), "
                            "which remote-writes to Prometheus")
    stack.add_argument("--otelcol", type=_executable, default=None,
                       help="collector binary for --collector (default: otelcol-tinywindow or otelcol-contrib on PATH)")
    stack.set_defaults(func=_stack)

    assets = commands.add_parser("assets", help="the alert rules, dashboards and configs that ship with the package",
                                 description="The monitoring assets: Prometheus alert rules and their tests, "
                                             "Alertmanager and Prometheus configuration, Grafana dashboards and "
                                             "provisioning, the OpenTelemetry Collector configuration, runbooks.")
    assets_commands = assets.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    export = assets_commands.add_parser("export", help="write them to a folder, ready to mount, with a README",
                                        description="Write every asset to DIRECTORY (created if needed), "
                                                    "laid out as the containers expect, with a README.md "
                                                    "saying what to mount where.")
    export.add_argument("directory", metavar="DIRECTORY", help="where to write (must be empty or new)")
    export.add_argument("--force", action="store_true", help="write into a non-empty folder, overwriting asset files")
    export.set_defaults(func=_assets_export)
    where = assets_commands.add_parser("path", help="print the folder the installed assets are read from")
    where.set_defaults(func=_assets_path)

    hashing = commands.add_parser("hash-password", help="hash a password for basic auth on /metrics",
                                  description="Read a password (prompted, or the first line of stdin) and print "
                                              "its PBKDF2 hash, for --basic-auth-hash-file.")
    hashing.add_argument("--iterations", type=_iterations, default=DEFAULT_ITERATIONS,
                         help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS}, at least {MIN_ITERATIONS}, "
                              f"at most {MAX_ITERATIONS})")
    hashing.set_defaults(func=_hash_password)

    docs = commands.add_parser("docs", help="print the metrics reference (Markdown)",
                               description="Print the metrics reference (docs/metrics.md), generated from the catalog.")
    docs.set_defaults(func=_docs)
    return parser


def _hint(exc: BaseException, args: argparse.Namespace) -> str | None:
    """What to do about a failure the user can fix, or None."""
    from ..config import MissingExtraError

    if isinstance(exc, UsageError):
        command = " ".join(filter(None, ["tinywindow-otel", args.command, getattr(args, "assets_command", None)]))
        return f"see `{command} --help`"
    if isinstance(exc, MissingExtraError):
        return "install the OTLP exporter: pip install 'tinywindow-otel[otlp]' (or unset OTEL_METRICS_EXPORTER)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return "another program uses that port: choose one with --port (0 = any free port)"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL):
        return "check --host and --port (ports below 1024 need privileges)"
    if isinstance(exc, FileExistsError):
        return "choose a new folder, or pass --force"
    if args.command == "stack" and "address already in use" in str(exc):
        return "another program uses that port: choose --prometheus-port/--alertmanager-port (0 = any free port)"
    return None


def _report(parser: argparse.ArgumentParser, args: argparse.Namespace, exc: BaseException, status: int) -> int:
    command = " ".join(filter(None, [parser.prog, args.command, getattr(args, "assets_command", None)]))
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror:  # without the "[Errno 98]" prefix
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    message = text.splitlines()[0] if text else type(exc).__name__
    print(f"{command}: error: {message}", file=sys.stderr)
    hint = _hint(exc, args)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, 1 for failures)."""
    from ..config import ConfigurationError
    from ..security import SecurityConfigError
    from .assets import AssetsNotFound
    from .stack import StackError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ConfigurationError, SecurityConfigError, FileExistsError) as exc:
        # Bad options, settings (OTEL_* variables) or destinations: the user's to fix.
        return _report(parser, args, exc, 2)
    except (StackError, AssetsNotFound, OSError) as exc:
        return _report(parser, args, exc, 1)
