"""DKIM signing (RFC 6376): ``a=rsa-sha256``, ``c=relaxed/relaxed``, one signature per message.

dkimpy does the parsing and the canonicalisation (``rfc822_parse``,
``CanonicalizationPolicy``, ``hash_headers``); the RSA operation is done by
``cryptography`` (OpenSSL) instead of dkimpy's pure-Python RSA: 0.3 ms per
signature instead of 6.5 ms with the GIL held (measured on the 2-core CI
machine), which is what keeps a signing relay near the speed of one that
does not sign. Every signature is checked by dkimpy's own verifier in the
tests.

Signing happens once, when a message enters the queue, never per delivery
attempt; :meth:`DkimSigner.sign_async` keeps the hashing of a large body off
the event loop, in threads of its own (:mod:`.workers` says why small ones
stay on it).
"""

from __future__ import annotations

import base64
import hashlib
import time
from email.utils import getaddresses
from typing import Callable, Iterable

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils
from dkim.canonicalization import CanonicalizationPolicy

from ..wire import header_section
from . import workers
from .dkimkeys import DkimKey, DkimKeys
from .fields import field_values

# RFC 6376 5.4.1's recommended set, plus RFC 8058's List-Unsubscribe-Post.
SIGNED_HEADERS = frozenset(name.encode() for name in (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-id", "content-description", "resent-date", "resent-from", "resent-sender",
    "resent-to", "resent-cc", "resent-message-id", "list-id", "list-help", "list-unsubscribe",
    "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive"))
# Signed once more than they occur (RFC 6376 8.15), when they occur: no one
# can add a second From, Subject ... without breaking the signature. Absent
# ones are left out, so a relay that adds a missing Date or Message-ID does
# not break it.
OVERSIGNED = tuple(name.encode() for name in (
    "from", "reply-to", "subject", "date", "to", "cc", "message-id"))
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
LINE = 76


def header_list(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The h= list for a message's header fields: each signable field as it occurs, then the oversigned.

    From is always in it (RFC 6376 5.4), twice.
    """
    present = [name.lower().strip() for name, _ in headers if name.lower().strip() in SIGNED_HEADERS]
    if b"from" not in present:
        present.insert(0, b"from")
    return present + [name for name in OVERSIGNED if name in present]


def _fold(atoms: Iterable[bytes], column: int) -> bytes:
    """Join ``atoms``, starting a continuation line where the next would pass column 76.

    Every atom boundary is a place RFC 6376 allows folding white space:
    between tags, after ``=`` and ``:``, and inside base64 values. An atom
    that starts with a space loses it at the start of a line.
    """
    out = bytearray()
    for atom in atoms:
        if column > 1 and column + len(atom) > LINE:
            out += b"\r\n "
            column = 1
            atom = atom.removeprefix(b" ")
        out += atom
        column += len(atom)
    return bytes(out)


def _chunks(data: bytes, size: int = 64) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def signature_header(message: bytes, key: DkimKey, now: float | None = None) -> bytes:
    """The ``DKIM-Signature:`` field (ending in CRLF) to put on top of ``message``."""
    headers, body = dkim.rfc822_parse(message)
    include = header_list(headers)
    body_hash = base64.b64encode(hashlib.sha256(RELAXED.canonicalize_body(body)).digest())
    domain = key.domain.encode("idna")
    names = [name + b":" for name in include[:-1]] + [include[-1] + b";"]
    atoms = [b"v=1;", b" a=rsa-sha256;", b" c=relaxed/relaxed;", b" d=" + domain + b";",
             b" s=" + key.selector.encode("ascii") + b";", b" t=%d;" % int(time.time() if now is None else now),
             b" h=", *names, b" bh=", *_chunks(body_hash), b";", b" b="]
    name = b"DKIM-Signature"
    unsigned = _fold(atoms, len(name) + 2)
    hasher = hashlib.sha256()
    dkim.hash_headers(hasher, RELAXED, RELAXED.canonicalize_headers(headers), include,
                      (name, b" " + unsigned), None)
    signature = key.private_key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    newline = unsigned.rfind(b"\n")
    column = len(unsigned) - newline - 1 if newline >= 0 else len(name) + 2 + len(unsigned)
    value = unsigned + _fold(_chunks(base64.b64encode(signature)), column)
    return name + b": " + value + b"\r\n"


def signing_domain(mail_from: str, message: bytes, is_local: Callable[[str], bool]) -> str | None:
    """The domain to sign for: the From header's if it is local (so DMARC aligns), else the sender's.

    None when neither is a local domain: mailtui signs only for its own domains.
    """
    values = [v.decode("utf-8", "replace") for v in field_values(header_section(message) + b"\r\n", b"from")]
    for _, address in getaddresses(values):
        domain = address.rpartition("@")[2].strip().lower()
        if domain and is_local(domain):
            return domain
    domain = mail_from.rpartition("@")[2].strip().lower()
    return domain if domain and is_local(domain) else None


def signable(domain: str) -> bool:
    """Whether a local domain can have a published key: every one but ``localhost``."""
    return domain.lower().rstrip(".") != "localhost"


class DkimSigner:
    """Signs with each domain's active key (made on first use).

    ``is_local`` says which domains are ours: :meth:`signature` signs only
    for them (never ``localhost``, which no one can publish a key for).
    """

    def __init__(self, keys: DkimKeys, is_local: Callable[[str], bool] = lambda domain: False):
        self.keys = keys
        self.is_local = lambda domain: signable(domain) and is_local(domain)

    async def signature(self, sender: str, message: bytes) -> bytes:
        """The DKIM-Signature field for a message from ``sender``; b"" when no local domain signs it."""
        domain = signing_domain(sender, message, self.is_local)
        return b"" if domain is None else await self.sign_async(message, domain)

    def prepare(self, domains: Iterable[str]) -> list[DkimKey]:
        """Make (or load) the key of each of ``domains`` that can sign (blocking: keep it off the loop)."""
        return [self.keys.active(domain) for domain in domains if signable(domain)]

    def sign(self, message: bytes, domain: str) -> bytes:
        """The DKIM-Signature field for ``message`` as ``domain`` (blocking: keep it off the loop)."""
        return signature_header(message, self.keys.active(domain))

    async def sign_async(self, message: bytes, domain: str) -> bytes:
        return await workers.run(len(message), self.sign, message, domain)
