"""Custom domains and TLS termination (W8), end to end: a server of the test's own with a
self-signed certificate (localhost, 127.0.0.1, *.example.com) serves HTTPS on the gateway
port and on the endpoints' own ports; exact and wildcard custom domains route by Host;
a domain cannot be taken by a second endpoint; plain HTTP to a TLS port fails cleanly.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect as ws_connect

from conftest import ServerHandle, _use_home
from ketch.config import Config
from ketch.exception import AlreadyExistsError, InvalidError
from supports import web_tls_apps


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate that is its own CA, for localhost, 127.0.0.1 and
    *.example.com; returns (certificate path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ketch test gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("*.example.com"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
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


class TLSServer:
    def __init__(self, handle: ServerHandle, cert: Path) -> None:
        self.handle = handle
        self.cert = cert
        self.ctx = ssl.create_default_context(cafile=str(cert))

    @property
    def gateway_port(self) -> int:
        return int(str(self.handle.info()["gateway_port"]))


@pytest.fixture
def tls_server(
    tmp_path: Path, ketch_server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TLSServer]:
    """A server of this test's own, started with a certificate; the session server becomes
    current again afterwards (as conftest's fresh_server does)."""
    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("KETCH_TLS_CERT", str(cert))
    monkeypatch.setenv("KETCH_TLS_KEY", str(key))
    home = tmp_path / "home"
    _use_home(home)
    handle = ServerHandle(home)
    handle.start()
    try:
        yield TLSServer(handle, cert)
    finally:
        from ketch._client.client import Client
        from ketch._utils.aio import run_sync

        current = Client._current
        if current is not None:
            with contextlib.suppress(Exception):
                run_sync(current.close())
        handle.stop()
        _use_home(ketch_server.home)


def _get(
    srv: TLSServer, url: str, host: str | None = None, sni: str | None = None
) -> httpx.Response:
    headers = {"host": host} if host else {}
    extensions = {"sni_hostname": sni} if sni else {}
    with httpx.Client(verify=srv.ctx, timeout=60) as client:
        return client.get(url, headers=headers, extensions=extensions)


@pytest.mark.spec("W8")
@pytest.mark.spec("W9")
def test_endpoint_urls_are_https_and_serve_tls(tls_server: TLSServer) -> None:
    with web_tls_apps.app.run(show_logs=False):
        url = web_tls_apps.wild.get_web_url()
        assert url is not None and url.startswith("https://127.0.0.1:"), url
        r = _get(tls_server, url + "/x")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "endpoint": "wild",
            "host": url.removeprefix("https://"),
            "proto": "https",
            "path": "/x",
        }
        r = _get(tls_server, web_tls_apps.exact.get_web_url() or "")
        assert r.json()["endpoint"] == "exact"
        # The certificate is checked: a client that does not trust it refuses.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, timeout=60)


@pytest.mark.spec("W8")
def test_custom_domains_route_by_host_on_the_https_gateway_port(tls_server: TLSServer) -> None:
    gateway = f"https://127.0.0.1:{tls_server.gateway_port}"
    with web_tls_apps.app.run(show_logs=False):
        expected = {
            "api.example.com": "exact",  # an exact name wins over the wildcard
            "api.example.net": "exact",  # several names per endpoint
            "shop.example.com": "wild",
            "deep.shop.example.com": "wild",
            "www.example.net": "wild",
            "API.Example.com": "exact",  # host names are case-insensitive
        }
        for host, endpoint in expected.items():
            r = _get(tls_server, f"{gateway}/p", host=host)
            assert r.status_code == 200, (host, r.text)
            assert r.json()["endpoint"] == endpoint, host
            assert r.json()["proto"] == "https"
        for host in ("example.com", "example.net", "api.example.org"):
            r = _get(tls_server, f"{gateway}/p", host=host)
            assert r.status_code == 404, (host, r.text)
        # The name the client asks for in the handshake (SNI), checked against the
        # certificate's *.example.com, as a browser pointed at the domain would.
        r = _get(tls_server, f"{gateway}/", host="shop.example.com", sni="shop.example.com")
        assert r.json()["endpoint"] == "wild"


@pytest.mark.spec("W8")
@pytest.mark.spec("W11")
def test_websocket_over_tls(tls_server: TLSServer) -> None:
    with web_tls_apps.app.run(show_logs=False):
        url = web_tls_apps.exact.get_web_url() or ""
        big = os.urandom(1 << 20)
        with ws_connect(
            url.replace("https://", "wss://") + "/ws",
            ssl=tls_server.ctx,
            max_size=2**21,
            open_timeout=60,
        ) as ws:
            ws.send("hi")
            assert ws.recv(timeout=30) == "exact:hi"
            ws.send(big)
            assert ws.recv(timeout=30) == big


@pytest.mark.spec("W8")
def test_a_custom_domain_is_not_shared(tls_server: TLSServer) -> None:
    with web_tls_apps.app.run(show_logs=False):
        with (
            pytest.raises(AlreadyExistsError, match=r"api\.example\.com"),
            web_tls_apps.clash_app.run(show_logs=False),
        ):
            pass
        # The first app keeps its domain.
        r = _get(
            tls_server, f"https://127.0.0.1:{tls_server.gateway_port}/", host="api.example.com"
        )
        assert r.json()["endpoint"] == "exact"


@pytest.mark.spec("W8")
def test_plain_http_to_a_tls_port_fails_cleanly(tls_server: TLSServer) -> None:
    with web_tls_apps.app.run(show_logs=False):
        url = web_tls_apps.wild.get_web_url() or ""
        port = httpx.URL(url).port
        assert port is not None
        with pytest.raises(httpx.TransportError) as info:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert not isinstance(info.value, httpx.TimeoutException)
        # Raw: the request is refused with a TLS alert or a close, never an HTTP answer,
        # and the connection ends (no hang).
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    received += chunk
        assert not received.startswith(b"HTTP/"), received
        assert received == b"" or received[0] == 0x15, received  # 0x15: a TLS alert record
        # The port still serves HTTPS.
        assert _get(tls_server, url).status_code == 200


@pytest.mark.spec("W8")
def test_tls_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KETCH_CONFIG_FILE", "")
    monkeypatch.setenv("KETCH_TLS_CERT", str(tmp_path / "cert.pem"))
    monkeypatch.delenv("KETCH_TLS_KEY", raising=False)
    with pytest.raises(InvalidError, match="go together"):
        Config.load()
    monkeypatch.setenv("KETCH_TLS_KEY", "key.pem")
    with pytest.raises(InvalidError, match="absolute path"):
        Config.load()
    monkeypatch.setenv("KETCH_TLS_KEY", "~/key.pem")
    cfg = Config.load()
    assert cfg.tls_key == str(Path("~/key.pem").expanduser())
    monkeypatch.delenv("KETCH_TLS_CERT")
    monkeypatch.delenv("KETCH_TLS_KEY")
    assert Config.load().tls_cert == ""


@pytest.mark.spec("W8")
def test_a_certificate_that_does_not_load_is_refused_clearly(tmp_path: Path) -> None:
    from ketch._server.web_service import tls_context

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, key = make_certificate(tmp_path / "a")
    _, other_key = make_certificate(tmp_path / "b")
    assert tls_context(str(cert), str(key)) is not None
    with pytest.raises(InvalidError, match="cannot use the certificate"):
        tls_context(str(cert), str(other_key))
    with pytest.raises(InvalidError, match="no such file"):
        tls_context(str(tmp_path / "missing.pem"), str(key))
