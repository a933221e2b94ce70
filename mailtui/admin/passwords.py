"""Mailbox passwords, hashed with scrypt (a slow, memory-hard KDF).

Hashes are stored as ``scrypt$N$r$p$salt$hash`` (base64), so the cost can be
raised later without breaking old entries. Verification is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1
MIN_LENGTH = 8


class PasswordError(ValueError):
    pass


def check_strength(password: str) -> None:
    """Refuse empty and trivially weak passwords (one clear reason)."""
    if not password:
        raise PasswordError("password is empty")
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"password is shorter than {MIN_LENGTH} characters")
    if len(set(password)) < 3:
        raise PasswordError("password repeats too few characters")
    if len(password) > 1024:
        raise PasswordError("password is longer than 1024 characters")


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str | bytes, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        pw = password if isinstance(password, bytes) else password.encode("utf-8", "surrogateescape")
        actual = hashlib.scrypt(pw, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
