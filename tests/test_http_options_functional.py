"""Optional HTTP features against a real logd: CORS for browsers, and HTTPS."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import ssl
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import READ_SECRET, start_logd

pytestmark = pytest.mark.functional


def _connection(url: str, context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    if context is not None:
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, context=context)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)


def test_cors_origin_is_announced_and_preflight_answered(tmp_path: Path) -> None:
    proc = start_logd(tmp_path, "--cors-origin", "https://logs.example.com")
    try:
        conn = _connection(proc.http_url)
        conn.request("OPTIONS", "/", headers={"Origin": "https://logs.example.com",
                                              "Access-Control-Request-Method": "GET"})  # fmt: skip
        pre = conn.getresponse()
        pre.read()
        assert pre.status == 204
        assert pre.headers["Access-Control-Allow-Origin"] == "https://logs.example.com"
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        conn.request("GET", "/?limit=1", headers={"Authorization": READ_SECRET})
        got = conn.getresponse()
        assert json.loads(got.read()) == []
        assert got.headers["Access-Control-Allow-Origin"] == "https://logs.example.com"
        conn.close()
    finally:
        proc.stop()


def test_no_cors_headers_by_default(tmp_path: Path) -> None:
    proc = start_logd(tmp_path)
    try:
        _, _, headers = proc.get("/", {"limit": "1"})
        assert "Access-Control-Allow-Origin" not in headers
    finally:
        proc.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    proc = start_logd(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert proc.http_url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        conn = _connection(proc.http_url, context)
        conn.request("GET", "/?limit=1", headers={"Authorization": READ_SECRET})
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == []
        conn.close()
        plain = _connection(proc.http_url.replace("https://", "http://"))
        plain.request("GET", "/healthz")
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            plain.getresponse()  # plain HTTP to the TLS port gets no HTTP answer
        plain.close()
    finally:
        proc.stop()
