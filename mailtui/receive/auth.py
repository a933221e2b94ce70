"""SMTP AUTH: deciding a login, behind the login throttle all protocols share.

aiosmtpd speaks the PLAIN and LOGIN mechanisms and decodes the credentials
(``aiosmtpd_compat.Engine.check_login`` hands them here). The throttle's wait
comes *before* the password is checked, so a flood of guesses cannot keep
the slow KDF busy; a failure counts for the client's IP across SMTP, POP3 and
IMAP, a success clears it. Every attempt is an event (AuthFailed,
AuthSucceeded) and a failure a log line. Whether AUTH needs TLS first is the
session's rules' business (``SessionRules.auth_requires_tls``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from ..admin.throttle import LoginThrottle
from ..events import AuthFailed, AuthSucceeded, EventBus
from ..replies import SmtpReply
from ..wire import printable

log = logging.getLogger(__name__)

INVALID = SmtpReply(535, "5.7.8", "Authentication credentials invalid")


class Credentials(Protocol):
    """Checks a login and password (the registry): the mailbox key, or None."""

    async def verify(self, login: str, password: bytes | str) -> str | None: ...


class SmtpAuth:
    """Decides SMTP AUTH attempts for every session of one server."""

    def __init__(self, *, credentials: Credentials, throttle: LoginThrottle, bus: EventBus,
                 failure_delay: float, proto: str = "smtp"):
        self.proto = proto                    # the service, in events ("smtp", "submission")
        self.credentials = credentials
        self.throttle = throttle
        self.bus = bus
        self.failure_delay = failure_delay    # the first wait after a failure; doubles per failure

    async def check(self, *, session: str, ip: str, login: bytes, password: bytes) -> str | SmtpReply:
        """The mailbox key ``login`` authenticates as, or :data:`INVALID`."""
        name = login.decode("utf-8", "replace")
        await asyncio.sleep(self.throttle.delay(ip, self.failure_delay))
        key = await self.credentials.verify(name, password)
        if key is None:
            failures = self.throttle.failed(ip)
            shown = printable(name[:128])
            self.bus.publish(AuthFailed(session=session, proto=self.proto, peer=ip, login=shown, failures=failures))
            log.warning("%s AUTH failed for %r from %s (%d recent failures)", self.proto.upper(), shown, ip,
                        failures)
            return INVALID
        self.throttle.succeeded(ip)
        self.bus.publish(AuthSucceeded(session=session, proto=self.proto, peer=ip, login=key))
        return key
