"""The common DKIM signature (rsa-sha256, no ``l=``, an RSA key), verified with OpenSSL's RSA.

dkimpy's verifier does its RSA arithmetic in pure Python and parses the key
record's ASN.1 in Python for every message: 0.45 ms of the 0.7 ms it takes
to verify a 4 KiB message (measured on the 2-core CI machine), with the GIL
held. For the signatures nearly every sender makes, :func:`verify_common`
takes the same steps with dkimpy's own parts - its canonicalisation, its
header selection and hashing (``hash_headers``), its key-record checks
(``evaluate_pk``) - and has ``cryptography`` do the RSA, as dkimsign.py does
for signing; each key record is parsed once. Anything else (ed25519,
rsa-sha1, ``l=``, keys for other services, input dkimpy's parts choke on)
is left to dkimpy's verifier: :func:`verify_common` returns None.
tests/test_mailauth.py checks that both give the same verdicts.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value

_SPACE = re.compile(rb"\s+")


@lru_cache(maxsize=512)
def rsa_key(record: bytes) -> tuple[rsa.RSAPublicKey, int] | None:
    """The RSA key of a DKIM key record and its size; None if it is not a plain RSA key for email.

    Raises dkimpy's KeyFormatError (or ValueError) for a record that is no key at all.
    """
    pk, bits, ktag, tlsrpt = dkim.evaluate_pk(b"key", record)
    if ktag != b"rsa" or tlsrpt:
        return None
    return rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"]).public_key(), bits


def verify_common(verifier: dkim.DKIM, index: int, record: bytes, min_bits: int) -> tuple[str, str] | None:
    """(result, reason) of the ``index``-th DKIM-Signature of the message ``verifier`` parsed, or None."""
    try:
        return _verify(verifier, index, record, min_bits)
    except Exception:   # noqa: BLE001 - anything unusual: dkimpy's verifier gives its verdict
        return None


def _verify(verifier: dkim.DKIM, index: int, record: bytes, min_bits: int) -> tuple[str, str] | None:
    field = [(name, value) for name, value in verifier.headers if name.lower() == b"dkim-signature"][index]
    tags = parse_tag_value(field[1])
    key = rsa_key(record)
    if tags.get(b"a") != b"rsa-sha256" or b"l" in tags or key is None:
        return None
    public, bits = key
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    body_hash = hashlib.sha256(policy.canonicalize_body(verifier.body)).digest()
    if body_hash != base64.b64decode(_SPACE.sub(b"", tags[b"bh"]), validate=True):
        return "fail", "body hash mismatch"
    signed = [name.lower() for name in re.split(rb"\s*:\s*", tags[b"h"])]
    if b"from" in signed:       # as dkimpy: a From field more than h= lists breaks the signature
        signed.append(b"from")
    hasher = hashlib.sha256()
    dkim.hash_headers(hasher, policy, policy.canonicalize_headers(verifier.headers), signed, field, tags)
    signature = base64.b64decode(_SPACE.sub(b"", tags[b"b"]), validate=True)
    try:
        public.verify(signature, hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return "fail", "signature did not verify"
    if bits < min_bits:
        return "permerror", f"public key too small: {bits}"
    return "pass", ""
