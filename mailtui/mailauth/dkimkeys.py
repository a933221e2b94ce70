"""DKIM keys: one 2048-bit RSA key per local domain and selector, under ``data_dir/dkim``.

The layout, every directory 0700 and every file 0600::

    dkim/<domain>/<selector>.pem    the private key (PKCS#1 PEM), written once, never changed
    dkim/<domain>/active            the selector that signs now, replaced atomically

A key file appears whole and exactly once (:func:`~mailtui.store.safeio.create_new`),
and ``active`` is replaced atomically, so the running server and a ``mailtui``
command may both make a domain's first key or rotate it at the same time: the
loser of a race reads the winner's key, and readers never see half a file.
Old keys stay after a rotation, so their records can stay published until
mail signed with them has been delivered.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..store.safeio import atomic_write, create_new

KEY_BITS = 2048
ACTIVE = "active"
RECHECK = 1.0       # seconds a domain's active key signs before ``active`` is looked at again


class DkimKeyError(Exception):
    """A key that cannot be read or made; the message names the file."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey = field(repr=False, compare=False)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def public_key_b64(self) -> str:
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")

    @property
    def record(self) -> str:
        """The TXT record to publish at :attr:`record_name` (RFC 6376 3.6.1)."""
        return f"v=DKIM1; k=rsa; p={self.public_key_b64}"


def new_private_key_pem(bits: int = KEY_BITS) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


class DkimKeys:
    """The key store of one data directory; thread-safe, and safe between processes."""

    def __init__(self, data_dir: Path, selector: str = "mailtui", *, bits: int = KEY_BITS,
                 clock: Callable[[], float] = time.time):
        self.root = Path(data_dir) / "dkim"
        self.selector = selector
        self.bits = bits
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded: dict[tuple[str, str], DkimKey] = {}
        self._active: dict[str, tuple[tuple[int, int], str]] = {}   # domain -> (stat of active, selector)
        self._fresh: dict[str, tuple[float, DkimKey]] = {}          # domain -> (when looked at, its key)

    # -- reading ---------------------------------------------------------------------

    def active(self, domain: str) -> DkimKey:
        """The key that signs for ``domain``, made now if the domain has none (blocking).

        A rotation by another process (``mailtui dkim rotate``) is seen within
        :data:`RECHECK` seconds; meanwhile no lock is taken and no file looked at.
        """
        domain = domain.lower()
        now = time.monotonic()
        fresh = self._fresh.get(domain)
        if fresh is not None and now - fresh[0] < RECHECK:
            return fresh[1]
        with self._lock:
            selector = self._active_selector(domain)
            key = self._make_first(domain) if selector is None else self._load(domain, selector)
        self._fresh[domain] = (now, key)
        return key

    def keys(self, domain: str) -> list[DkimKey]:
        """Every key of ``domain``, by selector: the active one and those rotated out."""
        folder = self.root / domain.lower()
        try:
            names = sorted(p.stem for p in folder.glob("*.pem"))
        except OSError:
            return []
        with self._lock:
            return [self._load(domain.lower(), name) for name in names]

    def _active_selector(self, domain: str) -> str | None:
        path = self.root / domain / ACTIVE
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns)
        known = self._active.get(domain)
        if known is not None and known[0] == stamp:
            return known[1]
        selector = path.read_text(encoding="ascii").strip()
        self._active[domain] = (stamp, selector)
        return selector

    def _load(self, domain: str, selector: str) -> DkimKey:
        key = self._loaded.get((domain, selector))
        if key is not None:
            return key
        path = self.root / domain / f"{selector}.pem"
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise DkimKeyError(f"DKIM key {path}: {exc}") from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise DkimKeyError(f"DKIM key {path}: not an RSA key")
        key = DkimKey(domain, selector, private)
        self._loaded[(domain, selector)] = key
        return key

    # -- making -----------------------------------------------------------------------

    def rotate(self, domain: str) -> DkimKey:
        """Make a new key under a new selector and make it the active one.

        The selector is ``<selector>-YYYYMMDD`` (``-2``, ``-3`` ... if that
        day already has one); the old keys stay, to be published until mail
        signed with them has arrived. A domain with no key yet gets its first.
        """
        domain = domain.lower()
        with self._lock:
            if self._active_selector(domain) is None:
                return self._make_first(domain)      # nothing to rotate from: the first key
            day = time.strftime("%Y%m%d", time.gmtime(self._clock()))
            base = f"{self.selector}-{day}"
            for n in range(1, 1000):
                selector = base if n == 1 else f"{base}-{n}"
                if self._create(domain, selector):
                    self._set_active(domain, selector)
                    return self._load(domain, selector)
        raise DkimKeyError(f"DKIM keys of {domain}: no free selector for {base}")  # pragma: no cover

    def _make_first(self, domain: str) -> DkimKey:
        self._create(domain, self.selector)      # False: another process made it first
        if self._active_selector(domain) is None:
            # Exclusive too: of two processes making the first key, one names it.
            create_new(self.root / domain / ACTIVE, self.selector.encode() + b"\n")
        return self._load(domain, self._active_selector(domain) or self.selector)

    def _create(self, domain: str, selector: str) -> bool:
        folder = self.root / domain
        path = folder / f"{selector}.pem"
        if path.exists():
            return False
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        return create_new(path, new_private_key_pem(self.bits))

    def _set_active(self, domain: str, selector: str) -> None:
        atomic_write(self.root / domain / ACTIVE, selector.encode() + b"\n")
        self._active.pop(domain, None)
        self._fresh.pop(domain, None)
