"""alert-relay: the webhook receiver alerts/alertmanager.yml sends to (http://alert-relay:5001).

    python alerts/relay.py --port 5001 --token-file /run/secrets/webhook-token

Standard library only, so it runs in any Python 3.9+ image (compose.yaml runs it
in the demo app's image). It accepts Alertmanager's webhook notifications on
``POST /page``, ``/chat`` and ``/deadmans-switch`` with the bearer token of
``--token-file`` and writes one JSON line per alert to stdout (``docker compose
logs alert-relay``): the place to plug in an SMS or chat bridge of your own.

Dead-man's switch: the Watchdog alert arrives on ``/deadmans-switch`` every
minute. When none arrived for ``--deadmans-timeout`` seconds, the relay logs
``deadmans-switch lapsed`` once and ``GET /healthz`` answers 503 until the next
one, so the container turns unhealthy: Prometheus, its rules or Alertmanager
stopped delivering.
"""

from __future__ import annotations

import argparse
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVERS = ("page", "chat", "deadmans-switch")
MAX_BODY = 1 << 20  # Alertmanager caps a group's payload far below this


class Relay:
    def __init__(self, token: str, deadmans_timeout: float) -> None:
        self.token = token
        self.deadmans_timeout = deadmans_timeout
        self.started = time.monotonic()
        self.last_watchdog: float | None = None
        self.lapsed = False
        self.lock = threading.Lock()

    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.token}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def deadmans_ok(self) -> bool:
        with self.lock:
            since = self.last_watchdog if self.last_watchdog is not None else self.started
        return time.monotonic() - since < self.deadmans_timeout

    def watchdog_age(self) -> str:
        with self.lock:
            last = self.last_watchdog
        if last is None:
            return f"no Watchdog yet (started {time.monotonic() - self.started:.0f}s ago)"
        return f"last Watchdog {time.monotonic() - last:.0f}s ago"

    def check_deadmans(self) -> None:
        ok = self.deadmans_ok()
        with self.lock:
            if not ok and not self.lapsed:
                self.lapsed = True
                emit({"receiver": "deadmans-switch", "status": "lapsed",
                      "message": f"deadmans-switch lapsed: no Watchdog for {self.deadmans_timeout:g}s"})
            elif ok:
                self.lapsed = False

    def notify(self, receiver: str, payload: dict) -> None:
        if receiver == "deadmans-switch":
            with self.lock:
                self.last_watchdog = time.monotonic()
                self.lapsed = False
            return
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            emit({"receiver": receiver, "status": alert.get("status", payload.get("status")),
                  "alertname": labels.get("alertname"), "labels": labels,
                  "summary": alert.get("annotations", {}).get("summary"),
                  "startsAt": alert.get("startsAt"), "endsAt": alert.get("endsAt")})


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def handler(relay: Relay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def answer(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path != "/healthz":
                self.answer(404, "not found")
            elif relay.deadmans_ok():
                self.answer(200, "ok: " + relay.watchdog_age())
            else:
                self.answer(503, f"deadmans-switch lapsed: no Watchdog for {relay.deadmans_timeout:g}s")

        def do_POST(self) -> None:  # noqa: N802
            receiver = self.path.strip("/")
            if receiver not in RECEIVERS:
                self.answer(404, f"unknown receiver {receiver!r}; expected one of {', '.join(RECEIVERS)}")
                return
            if not relay.authorized(self.headers.get("Authorization")):
                self.answer(401, "missing or wrong bearer token")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.answer(411, "Content-Length required")
                return
            if not 0 <= length <= MAX_BODY:
                self.answer(413, f"body of {length} bytes; at most {MAX_BODY}")
                return
            try:
                payload = json.loads(self.rfile.read(length))
                if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
                    raise ValueError("no 'alerts' list")
            except ValueError as error:
                self.answer(400, f"not an Alertmanager webhook payload: {error}")
                return
            relay.notify(receiver, payload)
            self.answer(200, "ok")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # one JSON line per alert is the log; no access log beside it

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5001, help="0 picks a free port (printed at start)")
    parser.add_argument("--token-file", required=True, help="file holding the bearer token Alertmanager sends")
    parser.add_argument("--deadmans-timeout", type=float, default=300.0,
                        help="seconds without a Watchdog before the dead-man's switch lapses")
    args = parser.parse_args(argv)
    try:
        with open(args.token_file, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as error:
        parser.error(f"cannot read --token-file: {error}")
    if not token:
        parser.error(f"--token-file {args.token_file} is empty")
    relay = Relay(token, args.deadmans_timeout)
    server = ThreadingHTTPServer((args.host, args.port), handler(relay))
    emit({"status": "listening", "address": f"{args.host}:{server.server_address[1]}"})
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(min(5.0, args.deadmans_timeout / 4)):
            relay.check_deadmans()
    threading.Thread(target=watch, name="deadmans-switch", daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
