"""The server's TLS context: STARTTLS (SMTP, IMAP), STLS (POP3) and implicit TLS (RFC 8314).

With no ``[tls] cert_file``/``key_file`` a self-signed certificate is made
once in ``data_dir/tls/`` so encryption always works out of the box; a real
deployment points the config at its own (e.g. Let's Encrypt) files.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from ..config import Config, ConfigError
from ..store.safeio import atomic_write


def make_self_signed(hostname: str) -> tuple[bytes, bytes]:
    """A self-signed EC certificate and key (PEM) for ``hostname``, localhost and loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.DNSName(hostname or "localhost"), x509.DNSName("localhost"),
           x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_files(config: Config) -> tuple[Path, Path]:
    """The certificate and key to use, generating the self-signed pair if needed."""
    if config.tls.cert_file or config.tls.key_file:
        if not (config.tls.cert_file and config.tls.key_file):
            raise ConfigError("tls.cert_file: cert_file and key_file must be set together")
        return Path(config.tls.cert_file).expanduser(), Path(config.tls.key_file).expanduser()
    folder = config.server.data_dir / "tls"
    cert, key = folder / "selfsigned.crt", folder / "selfsigned.key"
    if not (cert.exists() and key.exists()):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = make_self_signed(config.server.hostname)
        atomic_write(key, key_pem, mode=0o600)
        atomic_write(cert, cert_pem, mode=0o644)
    return cert, key


def server_context(config: Config) -> ssl.SSLContext:
    cert, key = certificate_files(config)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"tls.cert_file: {exc.filename} not found") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"tls.cert_file: cannot load {cert} / {key}: {exc}") from None
    return context
