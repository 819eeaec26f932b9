"""Shared test helpers: free ports, bounded waits, real scrapes parsed by prometheus_client."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


def fetch(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8")


def parse(text: str) -> dict:
    """Exposition text -> {family name as exposed: Metric}, using prometheus_client's real parser.

    The parser names a counter family without its ``_total``; the key here
    is the name the exposition shows (``tinywindow_trades_total``). Families
    without samples (every family shows its HELP/TYPE from the first scrape)
    are left out: "absent" means "no sample". So are the process and Python
    runtime families (``process_*``, ``python_*``): their values move between
    two scrapes; ``parse_all`` keeps them.
    """
    return {
        name: family for name, family in parse_all(text).items()
        if family.samples and not name.startswith(RUNTIME_PREFIXES)
    }


RUNTIME_PREFIXES = ("process_", "python_")


def parse_all(text: str) -> dict:
    """Every family of the exposition, by exposed name, with or without samples."""
    return {
        family.name + "_total" if family.type == "counter" else family.name: family
        for family in text_string_to_metric_families(text)
    }


def scrape(url: str) -> dict:
    return parse(fetch(url))


def sample_value(families: dict, sample_name: str, **labels: str) -> float | None:
    """The value of one sample (e.g. ``tinywindow_trades_total``) with exactly these labels."""
    for family in families.values():
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return sample.value
    return None


def require_tool(name: str) -> str:
    """Path of an external tool; in CI a missing tool fails the test instead of skipping it."""
    import pytest

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/test installs it with apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def fork_child(child: Callable[[], object]) -> int:
    """os.fork(); the child runs ``child()`` and exits 0, or 3 if it raised (never returns into pytest)."""
    with warnings.catch_warnings():  # 3.12+ warns that forking a threaded process may deadlock: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        except BaseException:  # noqa: BLE001 - report through the exit code, never return into pytest
            code = 3
        finally:
            os._exit(code)
    return pid


def reap_child(pid: int, timeout: float) -> int | None:
    """Exit code of the child, or None (child killed) if it did not exit within ``timeout``."""
    def reaped():
        done, status = os.waitpid(pid, os.WNOHANG)
        return status + 1 if done else None  # +1: a 0 status must count as done

    try:
        status = wait_until(reaped, timeout=timeout, interval=0.01, what="the forked child to exit") - 1
    except AssertionError:
        os.kill(pid, 9)  # a stuck child must not outlive the test (it holds pytest's pipes)
        os.waitpid(pid, 0)
        return None
    return os.waitstatus_to_exitcode(status)


def fork_repeatedly_while(work: Callable[[int], object], in_child: Callable[[], object], forks: int = 25,
                          child_timeout: float = 10.0) -> tuple[int, int]:
    """Fork ``forks`` times while two threads run ``work(i)``; (hung children, failed children).

    The children run ``in_child()``; one hang ends the loop (each costs ``child_timeout``).
    """
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        i = offset
        try:
            while not stop.is_set():
                work(i)
                i += 2
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    hung = failed = 0
    try:
        for n in range(forks):
            time.sleep(0.002 * (n % 5))  # fork at different points of the other threads' calls
            code = reap_child(fork_child(in_child), child_timeout)
            if code is None:
                hung += 1
                break  # one hang is enough: each costs child_timeout
            failed += code != 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not errors, errors
    return hung, failed
