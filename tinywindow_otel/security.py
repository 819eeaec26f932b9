"""Securing ``/metrics``: TLS (optionally mutual) and HTTP basic auth with a hashed password.

P&L and positions are sensitive; anyone who can reach the port can read them.

    >>> from tinywindow_otel import MetricsServer
    >>> from tinywindow_otel.security import BasicAuth, TLSConfig, hash_password
    >>> stored = hash_password("s3cret")            # keep this string, not the password
    >>> server = MetricsServer(                     # doctest: +SKIP
    ...     host="0.0.0.0", port=8000,
    ...     tls=TLSConfig("server.pem", "server-key.pem", client_ca_file="prometheus-ca.pem"),
    ...     auth=BasicAuth("prometheus", stored),
    ... )

The same settings come from the environment when not given in code (see
``TLSConfig.from_env`` / ``BasicAuth.from_env``).

Password hashes are ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` (stdlib
only; make one with ``tinywindow-otel hash-password``). Deriving the key costs
tens of milliseconds on purpose, so a verified ``Authorization`` header is
remembered (as a digest) and later scrapes cost a constant-time compare.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._internal.forksafe import reset_after_fork

ENV_TLS_CERT = "TINYWINDOW_OTEL_TLS_CERT_FILE"
ENV_TLS_KEY = "TINYWINDOW_OTEL_TLS_KEY_FILE"
ENV_TLS_CLIENT_CA = "TINYWINDOW_OTEL_TLS_CLIENT_CA_FILE"
ENV_AUTH_USER = "TINYWINDOW_OTEL_BASIC_AUTH_USERNAME"
ENV_AUTH_HASH = "TINYWINDOW_OTEL_BASIC_AUTH_PASSWORD_HASH"
ENV_AUTH_HASH_FILE = "TINYWINDOW_OTEL_BASIC_AUTH_PASSWORD_HASH_FILE"

_SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 200_000
MIN_ITERATIONS = 10_000


class SecurityConfigError(ValueError):
    """TLS or auth settings are incomplete or malformed."""


@dataclass(frozen=True)
class TLSConfig:
    """Serve HTTPS with ``certfile``/``keyfile`` (PEM); require client certificates
    signed by ``client_ca_file`` when it is given (mutual TLS)."""

    certfile: str
    keyfile: str | None = None
    client_ca_file: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
            if self.client_ca_file:
                context.load_verify_locations(cafile=self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
                # Python 3.13's default on every Python: a client PKI accepted
                # today must not be refused after an interpreter upgrade.
                context.verify_flags |= ssl.VERIFY_X509_STRICT
        except (OSError, ssl.SSLError) as exc:
            raise SecurityConfigError(
                f"cannot load TLS files (cert={self.certfile}, key={self.keyfile}, "
                f"client_ca={self.client_ca_file}): {exc}"
            ) from exc
        return context

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TLSConfig | None:
        cert, key, ca = environ.get(ENV_TLS_CERT), environ.get(ENV_TLS_KEY), environ.get(ENV_TLS_CLIENT_CA)
        if not cert:
            if key or ca:
                raise SecurityConfigError(f"{ENV_TLS_KEY}/{ENV_TLS_CLIENT_CA} are set but {ENV_TLS_CERT} is not")
            return None
        return cls(cert, key or None, ca or None)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """A PBKDF2-SHA256 hash string for ``password``, to store instead of the password."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"{_SCHEME}${iterations}${b64(salt)}${b64(derived)}"


def _parse_hash(stored: str) -> tuple[int, bytes, bytes]:
    try:
        scheme, iterations, salt, expected = stored.strip().split("$")
        if scheme != _SCHEME:
            raise ValueError(f"unsupported scheme {scheme!r}")
        rounds = int(iterations)
        if rounds < MIN_ITERATIONS:
            raise ValueError(f"{rounds} iterations is too few (minimum {MIN_ITERATIONS})")
        return rounds, base64.b64decode(salt, validate=True), base64.b64decode(expected, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError too
        raise SecurityConfigError(
            f"password hash must look like {_SCHEME}$<iterations>$<salt>$<hash> "
            f"(make one with `tinywindow-otel hash-password`): {exc}"
        ) from None


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the hash string ``stored`` (constant-time compare)."""
    iterations, salt, expected = _parse_hash(stored)
    derived = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(derived, expected)


class BasicAuth:
    """HTTP basic auth for ``/metrics`` against a username and a password hash."""

    def __init__(self, username: str, password_hash: str) -> None:
        if not username or ":" in username:
            raise SecurityConfigError("basic auth username must be non-empty and contain no ':'")
        _parse_hash(password_hash)  # fail at configuration time, not at the first scrape
        self.username = username
        self._hash = password_hash.strip()
        self._verified: bytes | None = None  # digest of the last header that passed
        # One expensive derivation at a time: a flood of wrong passwords costs
        # one core at most, and never delays a scrape with the remembered header.
        self._slow_path = threading.Lock()
        reset_after_fork(self)


    def after_fork_in_child(self) -> None:
        self._slow_path = threading.Lock()  # a parent thread may have been deriving a hash at fork time
    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password_hash=<hidden>)"

    def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value grants access."""
        if not authorization:
            return False
        digest = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()
        verified = self._verified
        if verified is not None and hmac.compare_digest(digest, verified):
            return True
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            return False
        try:
            decoded = raw.decode("utf-8")  # RFC 7617 with charset="UTF-8", as Prometheus sends
        except UnicodeDecodeError:
            decoded = raw.decode("latin-1")  # what some clients (python-requests) send
        username, sep, password = decoded.partition(":")
        if not sep:
            return False
        with self._slow_path:
            user_ok = hmac.compare_digest(username.encode("utf-8"), self.username.encode("utf-8"))
            password_ok = verify_password(password, self._hash)  # always derive: no timing hint on the user
        if user_ok and password_ok:
            self._verified = digest
            return True
        return False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BasicAuth | None:
        """From ``TINYWINDOW_OTEL_BASIC_AUTH_USERNAME`` plus ``..._PASSWORD_HASH`` or ``..._PASSWORD_HASH_FILE``."""
        username = environ.get(ENV_AUTH_USER)
        stored = environ.get(ENV_AUTH_HASH)
        path = environ.get(ENV_AUTH_HASH_FILE)
        if not username:
            if stored or path:
                raise SecurityConfigError(f"a password hash is configured but {ENV_AUTH_USER} is not")
            return None
        if path:
            stored = read_hash_file(path)
        if not stored:
            raise SecurityConfigError(f"{ENV_AUTH_USER} is set but neither {ENV_AUTH_HASH} nor {ENV_AUTH_HASH_FILE}")
        return cls(username, stored)


def read_hash_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecurityConfigError(f"cannot read password hash file {path}: {exc.strerror or exc}") from exc
