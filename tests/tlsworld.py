"""A test certificate authority and loopback HTTPS servers, for MTA-STS (and enforced TLS) tests.

* :class:`TestCA` makes a CA and issues server certificates for given names;
  its ``ca_file`` is what mailtui is told to trust (``[mta_sts] ca_file``);
* :class:`PolicyServer` serves ``/.well-known/mta-sts.txt`` over HTTPS on one
  loopback address, answering as told (a policy, a redirect, a huge body,
  nothing at all), and counts its requests.

Nothing here listens outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class TestCA:
    """A CA on disk (``ca_file``) that issues certificates for loopback servers."""

    __test__ = False     # not a pytest class

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="mailtui-ca-"))
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(_name("mailtui test CA")).issuer_name(_name("mailtui test CA"))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_file = str(self.folder / "ca.pem")
        Path(self.ca_file).write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, *names: str, expired: bool = False) -> tuple[str, str]:
        """(cert file, key file) for a server certificate valid for ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired else \
            (now - datetime.timedelta(days=1), now + datetime.timedelta(days=10))
        cert = (x509.CertificateBuilder()
                .subject_name(_name(names[0])).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .sign(self.key, hashes.SHA256()))
        stem = self.folder / f"{names[0]}-{x509.random_serial_number() % 10**9}"
        cert_file, key_file = f"{stem}.crt", f"{stem}.key"
        Path(cert_file).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(key_file).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
        return cert_file, key_file

    def server_context(self, *names: str, expired: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.issue(*names, expired=expired))
        return context


@dataclass
class PolicyServer:
    """HTTPS on ``host:port`` answering ``GET /.well-known/mta-sts.txt``.

    ``answer`` is the raw HTTP answer (status line, headers, body); None means
    accept the connection and never say anything (not even the TLS handshake).
    """

    host: str
    port: int
    context: ssl.SSLContext | None
    answer: bytes | None = None
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    _tasks: set = field(default_factory=set)

    @staticmethod
    def ok(body: str | bytes, content_type: str = "text/plain", length: bool = True) -> bytes:
        data = body.encode() if isinstance(body, str) else body
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        if length:
            head += f"Content-Length: {len(data)}\r\n"
        return head.encode() + b"\r\n" + data

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self.answer is None:
                await asyncio.sleep(3600)
                return
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            self.requests.append(request)
            writer.write(self.answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def start(self) -> "PolicyServer":
        # A silent server speaks plain TCP, so even the TLS handshake never completes.
        ssl_context = None if self.answer is None else self.context
        self.server = await asyncio.start_server(self._serve, self.host, self.port, ssl=ssl_context,
                                                 reuse_address=True)
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 2)
