"""DKIM verification (RFC 6376 section 6) of every signature on a message.

Two steps, so no thread waits on the network:

1. on the loop: find the DKIM-Signature fields in the header section, check
   their tags (a malformed one is ``permerror`` at once), and fetch each
   key record through mailtui's resolver (purpose ``DKIM``);
2. on the loop for a small message, in a DKIM thread for a large one
   (:mod:`.workers`): each signature is checked with the keys already
   fetched - the common kind (rsa-sha256) by ``dkimrsa.py`` (dkimpy's parts,
   OpenSSL's RSA), any other by dkimpy's own verifier (``dkim.DKIM.verify``).

dkimpy's ``dkim.asyncsupport`` would do the lookups through aiodns (another
resolver, outside the DNS log) and hash every body on the loop; this keeps
the one resolver, and large bodies off the loop. Results use RFC 8601's words: ``pass``,
``fail`` (the signature does not match), ``permerror`` (malformed signature
or key, no key), ``temperror`` (the key could not be fetched now).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from ..dns.resolver import Answer, DnsError, Resolver
from ..wire import header_section, printable
from . import workers
from .dkimrsa import rsa_key, verify_common

MAX_SIGNATURES = 5          # more are not checked (each costs a lookup and a body hash)
MAX_SIGNED_FIELDS = 64      # h= longer than this is refused as permerror (dkimpy's matching is quadratic)
MIN_KEY_BITS = 1024         # RFC 8301 3.2

_quiet = logging.getLogger("mailtui.mailauth.dkimpy")
_quiet.setLevel(logging.CRITICAL)   # dkimpy logs as errors what is, here, a verdict with its reason
_DKIM_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class DkimResult:
    result: str                 # pass, fail, permerror, temperror (RFC 8601 2.7.1)
    domain: str = ""            # the signature's d=
    selector: str = ""          # its s=
    reason: str = ""


@dataclass
class _Signature:
    index: int
    domain: str = ""
    selector: str = ""
    error: str = ""             # why it is permerror before any lookup

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


async def verify_dkim(message: bytes, resolver: Resolver, *, timeout: float = 20.0) -> list[DkimResult]:
    """One result per DKIM-Signature (the first :data:`MAX_SIGNATURES`); [] if the message has none."""
    signatures = find_signatures(message)
    if not signatures:
        return []
    cached = _from_cache(message, signatures, resolver)
    if cached is not None:
        return cached
    names = sorted({s.key_name for s in signatures if not s.error})
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(_fetch_key(resolver, name) for name in names)), timeout)
    except asyncio.TimeoutError:
        answers = [DnsError("4.4.3", "DKIM key lookups timed out")] * len(names)
    keys = dict(zip(names, answers))
    try:
        work = len(message) * len(signatures)             # each signature hashes the body again
        return await asyncio.wait_for(workers.run(work, check_signatures, message, signatures, keys), timeout)
    except asyncio.TimeoutError:
        return [DkimResult("temperror", s.domain, s.selector, "verification timed out") for s in signatures]


def dkim_from_cache(message: bytes, resolver: Resolver) -> list[DkimResult] | None:
    """The results if every key is cached and the message small enough to check here and now, else None.

    Nothing to wait for, so nothing to hand to the loop or to a thread: a
    sender that writes often is checked without a single hand-off.
    """
    signatures = find_signatures(message)
    return _from_cache(message, signatures, resolver) if signatures else []


def _from_cache(message: bytes, signatures: list[_Signature], resolver: Resolver) -> list[DkimResult] | None:
    names = sorted({s.key_name for s in signatures if not s.error})
    if len(message) * len(signatures) > workers.INLINE_MAX or \
            any(resolver.cached(name, "TXT") is None for name in names):
        return None
    keys = {name: _key(resolver.peek(name, "TXT", purpose="DKIM")) for name in names}
    return check_signatures(message, signatures, keys)


def find_signatures(message: bytes) -> list[_Signature]:
    """The DKIM-Signature fields of a message, each parsed and checked for well-formedness."""
    head = header_section(message)
    if not _DKIM_FIELD.search(head):
        return []
    try:
        headers, _ = dkim.rfc822_parse(head + b"\r\n")
    except Exception as exc:  # MessageFormatError, or IndexError on a leading continuation line
        return [_Signature(0, error=f"malformed header section ({_text(exc)})")]
    values = [value for name, value in headers if name.strip().lower() == b"dkim-signature"]
    return [_parse(index, value) for index, value in enumerate(values[:MAX_SIGNATURES])]


def _parse(index: int, value: bytes) -> _Signature:
    signature = _Signature(index)
    try:
        tags = parse_tag_value(value)
    except InvalidTagValueList as exc:
        signature.error = f"malformed signature ({_text(exc)})"
        return signature
    signature.domain = _text(tags.get(b"d", b"")).lower()[:255]
    signature.selector = _text(tags.get(b"s", b"")).lower()[:255]
    try:
        dkim.validate_signature_fields(tags)
    except dkim.DKIMException as exc:
        signature.error = f"malformed signature ({_text(exc)})"
        return signature
    if len(tags[b"h"].split(b":")) > MAX_SIGNED_FIELDS:
        signature.error = f"h= lists more than {MAX_SIGNED_FIELDS} fields"
    elif not (signature.domain.isascii() and signature.selector.isascii()):
        signature.error = "d= or s= is not an ASCII domain name"
    return signature


async def _fetch_key(resolver: Resolver, name: str) -> bytes | None | DnsError:
    """The key record at ``name`` (the first, if several), None if there is none, or the DNS error."""
    try:
        return _key(await resolver.lookup(name, "TXT", purpose="DKIM"))
    except DnsError as exc:
        return exc


def _key(answer: Answer | None) -> bytes | None:
    return answer.values[0] if answer is not None and answer.values else None


def check_signatures(message: bytes, signatures: list[_Signature],
                     keys: dict[str, bytes | None | DnsError]) -> list[DkimResult]:
    """The CPU-bound step: dkimpy's verifier on each signature, with its key already fetched."""
    verifier: dkim.DKIM | str | None = None        # str: why the message cannot be verified
    results = []
    for signature in signatures:
        key = keys.get(signature.key_name)
        if signature.error:
            outcome = ("permerror", signature.error)
        elif isinstance(key, DnsError):
            outcome = ("temperror", f"key lookup failed: {key.text}")
        elif key is None:
            outcome = ("permerror", f"no key for signature at {signature.key_name}")
        else:
            if verifier is None:
                verifier = _verifier(message)
            outcome = ("permerror", verifier) if isinstance(verifier, str) else \
                _verify_one(verifier, signature, key)
        results.append(DkimResult(outcome[0], signature.domain, signature.selector, outcome[1]))
    return results


def _verifier(message: bytes) -> dkim.DKIM | str:
    try:
        return dkim.DKIM(message, logger=_quiet, minkey=MIN_KEY_BITS)
    except Exception as exc:  # dkimpy on input it never expected: a verdict, not a crash
        return f"malformed message ({_text(exc)})"


def _verify_one(verifier: dkim.DKIM, signature: _Signature, key: bytes) -> tuple[str, str]:
    try:
        rsa_key(key)                          # dkimpy's checks of the record, parsed once per record
    except (dkim.DKIMException, ValueError, TypeError) as exc:
        return "permerror", f"bad key record ({_text(exc)})"
    common = verify_common(verifier, signature.index, key, MIN_KEY_BITS)
    if common is not None:
        return common
    try:
        ok = verifier.verify(signature.index, dnsfunc=lambda name, timeout=5: key)
    except dkim.ValidationError as exc:       # body hash mismatch, expired ...
        return "fail", _text(exc)
    except dkim.KeyFormatError as exc:        # key too small, digest too large
        return "permerror", _text(exc)
    except dkim.DKIMException as exc:
        return "permerror", _text(exc)
    except Exception as exc:                  # dkimpy on input it never expected: a verdict, not a crash
        return "permerror", f"unverifiable signature ({type(exc).__name__})"
    return ("pass", "") if ok else ("fail", "signature did not verify")


def _text(value: object) -> str:
    """Text for a reason: dkimpy's messages carry reprs of bytes (``b'bh'``); show the bytes."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return printable(re.sub(r"\bb'([^']*)'", r"\1", str(value)))[:200]
