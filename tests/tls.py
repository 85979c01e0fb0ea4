"""Certificates for TLS tests, made with the ``openssl`` CLI: a private CA and a server cert it signs
(for ``localhost`` and ``127.0.0.1``), and a self-signed server cert (a development server's)."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class Certs:
    """Paths of what :func:`make_certs` wrote."""

    ca: Path  # the private CA's certificate (what ORCH_WEBHOOK_CA_BUNDLE names)
    server_cert: Path  # signed by the CA
    server_key: Path
    self_signed_cert: Path  # signed by nobody but itself
    self_signed_key: Path

    def server_context(self, *, self_signed: bool = False) -> ssl.SSLContext:
        """A server-side context presenting the CA-signed (or the self-signed) certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self_signed:
            ctx.load_cert_chain(self.self_signed_cert, self.self_signed_key)
        else:
            ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path) -> Certs:
    """Write a CA, a server certificate it signs and a self-signed one into `directory`."""
    d = directory
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=webhook-orchestrator test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / "server.ext").write_text(
        f"{SERVER_SAN}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "self.key", "-out", "self.pem",
        "-days", "2", "-subj", "/CN=localhost", "-addext", SERVER_SAN,
        cwd=d,
    )  # fmt: skip
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "self.pem", d / "self.key")
