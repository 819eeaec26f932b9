"""Throwaway PKI for TLS tests, generated with ``cryptography``: a CA, a server cert, client certs.

Valid under strict X.509 verification (``ssl.VERIFY_X509_STRICT``, on by default
from Python 3.13): every certificate carries a Subject Key Identifier and an
Authority Key Identifier, CAs a critical basicConstraints and keyUsage.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> str:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return str(path)


def _write_cert(cert, path: Path) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _builder(subject: str, issuer: x509.Name, public_key, issuer_public_key, days: int = 1, strict: bool = True):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if strict:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False)
    return builder


@dataclass
class CA:
    name: str
    key: object
    cert: x509.Certificate
    cert_path: str

    @classmethod
    def create(cls, directory: Path, name: str) -> CA:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (_builder(name, subject, key.public_key(), key.public_key(), days=2)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert, _write_cert(cert, directory / f"{name}.pem"))

    def issue(self, directory: Path, name: str, server: bool, strict: bool = True) -> tuple[str, str]:
        """(cert path, key path) for a leaf signed by this CA; ``strict=False`` omits the
        Authority Key Identifier, which strict X.509 verification requires."""
        key = _key()
        builder = (_builder(name, self.cert.subject, key.public_key(), self.cert.public_key(), strict=strict)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write_cert(cert, directory / f"{name}.pem"), _write_key(key, directory / f"{name}-key.pem")


@dataclass
class PKI:
    server_ca: CA
    server_cert: str
    server_key: str
    client_ca: CA
    client_cert: str
    client_key: str
    rogue_client_cert: str  # signed by a CA the server does not trust
    rogue_client_key: str


def make_pki(directory: Path) -> PKI:
    server_ca = CA.create(directory, "server-ca")
    client_ca = CA.create(directory, "client-ca")
    rogue_ca = CA.create(directory, "rogue-ca")
    server_cert, server_key = server_ca.issue(directory, "server", server=True)
    client_cert, client_key = client_ca.issue(directory, "prometheus", server=False)
    rogue_cert, rogue_key = rogue_ca.issue(directory, "rogue", server=False)
    return PKI(server_ca, server_cert, server_key, client_ca, client_cert, client_key, rogue_cert, rogue_key)
