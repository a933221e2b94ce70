"""One SMTP delivery of one message to one domain's mail hosts.

The courier knows nothing of queues or retries: given the hosts to try (best
first), it connects to each address in turn until one session gets as far as
MAIL FROM, runs one transaction for all the recipients, and reports an
:class:`Outcome` per recipient. What to do with the outcomes (deliver, defer,
bounce) is :mod:`mailtui.send.attempt`'s business. :class:`Courier` is that
contract (chasquid's ``courier.Courier``); :class:`SmtpCourier` keeps it over
SMTP, and a test or a connection-reusing courier can take its place.

Behaviour follows Postfix's SMTP client where it matters: opportunistic
STARTTLS without certificate checks (a failed handshake is retried in
plaintext), SIZE honoured before sending, BODY=8BITMIME when offered (8-bit
mail is still sent when it is not), SMTPUTF8 required for mail that needs it,
per-recipient results, and connection failures moving on to the next address.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import aiosmtplib
from aiosmtplib import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from ..dns.resolver import MailHost
from ..replies import enhanced_status, one_line
from ..wire import normalize_crlf


@dataclass(frozen=True)
class Outcome:
    ok: bool
    permanent: bool
    code: int                      # SMTP reply code; 0 when no server answered
    status: str                    # RFC 3463, e.g. "5.1.1"
    text: str                      # plain words, for people and DSNs
    remote_mta: str                # host name of the server that answered ("" if none did)
    tls: bool
    reply: str = ""                # the server's reply, e.g. "550 5.1.1 no such user"

    @property
    def diagnostic(self) -> str:
        """RFC 3464 Diagnostic-Code value ("smtp; 550 5.1.1 ..."), "" if no reply."""
        return f"smtp; {self.reply}" if self.reply else ""


class Courier(Protocol):
    """Carries one message to one domain's mail hosts, and says what became of it.

    ``hosts`` come best first. The answer has an :class:`Outcome` for every
    recipient, and a failed one says whether the failure is permanent. A
    courier never waits to retry and never bounces: the attempt decides that.
    """

    async def deliver(self, hosts: list[MailHost], *, sender: str, recipients: list[str],
                      body: bytes, smtputf8: bool = False,
                      body_8bit: bool = False) -> dict[str, Outcome]: ...


@dataclass(frozen=True)
class SmtpCourier:
    """The :class:`Courier` that speaks SMTP: one connection per delivery (see :func:`send`)."""

    helo: str
    port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 120.0

    async def deliver(self, hosts: list[MailHost], *, sender: str, recipients: list[str],
                      body: bytes, smtputf8: bool = False,
                      body_8bit: bool = False) -> dict[str, Outcome]:
        return await send(hosts, port=self.port, helo=self.helo, sender=sender,
                          recipients=recipients, body=body, smtputf8=smtputf8,
                          body_8bit=body_8bit, connect_timeout=self.connect_timeout,
                          command_timeout=self.command_timeout)


@lru_cache(maxsize=1)
def client_tls_context() -> ssl.SSLContext:
    """Opportunistic TLS: encrypt, but check nothing (as Postfix's "may" level)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _TryNext(Exception):
    """This address could not take the mail; try the next one."""

    def __init__(self, text: str, status: str = "4.4.1", code: int = 0,
                 remote_mta: str = "", reply: str = ""):
        super().__init__(text)
        self.text = text
        self.status = status
        self.code = code
        self.remote_mta = remote_mta
        self.reply = reply


class _TlsFailed(Exception):
    """STARTTLS was offered but the handshake failed; retry without it."""


async def send(hosts: list[MailHost], *, port: int, helo: str, sender: str,
               recipients: list[str], body: bytes, smtputf8: bool = False,
               body_8bit: bool = False, connect_timeout: float = 30.0,
               command_timeout: float = 120.0) -> dict[str, Outcome]:
    """Deliver ``body`` to ``recipients`` through the first host that takes it."""
    body = normalize_crlf(body, final=True)
    if not helo.isascii():
        helo = helo.encode("idna").decode("ascii")
    failure = _TryNext("no mail host to try")
    for host in hosts:
        for address in host.addresses:
            use_tls = True
            while True:
                session = _Session(host, address, port, helo, connect_timeout, command_timeout)
                try:
                    return await session.run(sender, recipients, body, smtputf8=smtputf8,
                                             body_8bit=body_8bit, use_tls=use_tls)
                except _TlsFailed:
                    use_tls = False
                    continue
                except _TryNext as exc:
                    failure = exc
                    break
    return {rcpt: Outcome(ok=False, permanent=False, code=failure.code, status=failure.status,
                          text=failure.text, remote_mta=failure.remote_mta, tls=False,
                          reply=failure.reply)
            for rcpt in recipients}


class _Session:
    def __init__(self, host: MailHost, address: str, port: int, helo: str,
                 connect_timeout: float, command_timeout: float):
        self.host = host
        self.address = address
        self.port = port
        self.helo = helo
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.tls = False
        self.name = host.name if host.name.startswith("[") else f"{host.name}[{address}]"
        self.where = f"{self.name}:{port}"
        self.smtp = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=helo,
                                    timeout=command_timeout, start_tls=False)

    # -- outcomes --------------------------------------------------------------

    def _said(self, code: int, message: str, stage: str) -> str:
        return f"host {self.name} said: {code} {one_line(message)} (in reply to {stage})"

    def _reply_outcome(self, code: int, message: str, stage: str) -> Outcome:
        ok = 200 <= code < 300
        permanent = 500 <= code < 600
        return Outcome(ok=ok, permanent=permanent, code=code,
                       status=enhanced_status(code if (ok or permanent or 400 <= code < 500) else 451,
                                              message),
                       text=self._said(code, message, stage), remote_mta=self.host.name,
                       tls=self.tls, reply=f"{code} {one_line(message)}")

    def _local_outcome(self, permanent: bool, status: str, text: str) -> Outcome:
        return Outcome(ok=False, permanent=permanent, code=0, status=status, text=text,
                       remote_mta=self.host.name, tls=self.tls)

    # -- the session -----------------------------------------------------------

    async def run(self, sender: str, recipients: list[str], body: bytes, *,
                  smtputf8: bool, body_8bit: bool, use_tls: bool) -> dict[str, Outcome]:
        try:
            await self._open(use_tls)
            return await self._transaction(sender, recipients, body, smtputf8, body_8bit)
        finally:
            self.smtp.close()

    async def _open(self, use_tls: bool) -> None:
        smtp = self.smtp
        try:
            await smtp.connect(timeout=self.connect_timeout)
        except SMTPConnectTimeoutError:
            raise _TryNext(f"connection to {self.where} timed out") from None
        except SMTPConnectResponseError as exc:
            raise _TryNext(
                f"host {self.name} refused to talk to me: {exc.code} {one_line(exc.message)}",
                status=enhanced_status(exc.code, exc.message) if exc.code >= 400 else "4.4.2",
                code=exc.code, remote_mta=self.host.name,
                reply=f"{exc.code} {one_line(exc.message)}") from None
        except SMTPConnectError as exc:
            cause = exc.__cause__
            if isinstance(cause, ConnectionRefusedError):
                text = f"connection refused by {self.where}"
            elif isinstance(cause, OSError) and cause.strerror:
                text = f"cannot connect to {self.where}: {cause.strerror.lower()}"
            else:
                text = f"lost connection with {self.where} while waiting for the greeting"
            raise _TryNext(text) from None
        except (SMTPException, OSError) as exc:
            raise _TryNext(f"cannot connect to {self.where}: {exc}") from None

        await self._hello()
        if use_tls and smtp.supports_extension("starttls"):
            try:
                await smtp.starttls(tls_context=client_tls_context(),
                                    server_hostname=None if self.host.name.startswith("[")
                                    else self.host.name)
            except SMTPResponseException:
                return  # STARTTLS refused: carry on in plaintext, as Postfix does
            except (SMTPException, ssl.SSLError, OSError, asyncio.TimeoutError):
                raise _TlsFailed() from None
            self.tls = True
            await self._hello()

    async def _hello(self) -> None:
        smtp = self.smtp
        stage = "EHLO command"
        try:
            try:
                await smtp.ehlo(hostname=self.helo)
            except SMTPHeloError as exc:
                if exc.code < 500 or not smtp.is_connected:
                    raise
                stage = "HELO command"
                await smtp.helo(hostname=self.helo)
        except SMTPResponseException as exc:
            raise _TryNext(self._said(exc.code, exc.message, stage),
                           status=enhanced_status(exc.code, exc.message) if exc.code >= 400 else "4.4.2",
                           code=exc.code, remote_mta=self.host.name,
                           reply=f"{exc.code} {one_line(exc.message)}") from None
        except SMTPTimeoutError:
            raise _TryNext(f"timeout talking to {self.where} (in reply to {stage})",
                           status="4.4.2", remote_mta=self.host.name) from None
        except (SMTPServerDisconnected, SMTPException, OSError):
            raise _TryNext(f"lost connection with {self.where} (in reply to {stage})",
                           status="4.4.2", remote_mta=self.host.name) from None

    def _mail_options(self, body: bytes, smtputf8: bool, body_8bit: bool) -> list[bytes] | Outcome:
        """The MAIL FROM parameters for this server, or why it cannot take the message at all."""
        smtp = self.smtp
        if smtputf8 and not smtp.supports_extension("smtputf8"):
            return self._local_outcome(
                True, "5.6.7", f"SMTPUTF8 is required, but was not offered by host {self.name}")
        options: list[bytes] = []
        if smtp.supports_extension("size"):
            size_limit = smtp.esmtp_extensions.get("size", "")
            if size_limit.strip().isdigit() and 0 < int(size_limit) < len(body):
                return self._local_outcome(
                    True, "5.3.4", f"message size {len(body)} exceeds size limit "
                                   f"{int(size_limit)} of server {self.name}")
            options.append(f"SIZE={len(body)}".encode())
        if body_8bit and smtp.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
        if smtputf8:
            options.append(b"SMTPUTF8")
        return options

    async def _transaction(self, sender: str, recipients: list[str], body: bytes,
                           smtputf8: bool, body_8bit: bool) -> dict[str, Outcome]:
        smtp = self.smtp
        results: dict[str, Outcome] = {}

        def all_of(outcome: Outcome, rcpts: list[str]) -> dict[str, Outcome]:
            results.update({rcpt: outcome for rcpt in rcpts})
            return results

        options = self._mail_options(body, smtputf8, body_8bit)
        if isinstance(options, Outcome):
            await self._quit()
            return all_of(options, recipients)

        stage = "MAIL FROM command"
        try:
            reply = await smtp.execute_command(
                b"MAIL", b"FROM:<" + sender.encode("utf-8") + b">", *options)
            if reply.code != 250:
                await self._quit()
                return all_of(self._reply_outcome(reply.code, reply.message, stage), recipients)

            accepted: list[str] = []
            for rcpt in recipients:
                stage = "RCPT TO command"
                reply = await smtp.execute_command(b"RCPT", b"TO:<" + rcpt.encode("utf-8") + b">")
                if reply.code in (250, 251):
                    accepted.append(rcpt)
                else:
                    results[rcpt] = self._reply_outcome(reply.code, reply.message, stage)
            if not accepted:
                await self._quit()
                return results

            stage = "end of DATA command"
            try:
                reply = await smtp.data(body)
            except SMTPDataError as exc:
                await self._quit()
                return all_of(self._reply_outcome(exc.code, exc.message, stage), accepted)
            all_of(self._reply_outcome(reply.code, reply.message, stage), accepted)
            await self._quit()
            return results
        except SMTPTimeoutError:
            problem = f"timeout talking to {self.where} (in reply to {stage})"
        except (SMTPServerDisconnected, OSError):
            problem = f"lost connection with {self.where} (in reply to {stage})"
        except SMTPResponseException as exc:
            problem = self._said(exc.code, exc.message, stage)
        except SMTPException as exc:
            problem = f"error talking to {self.where}: {exc} (in reply to {stage})"
        pending = [r for r in recipients if r not in results or results[r].ok]
        return all_of(self._local_outcome(False, "4.4.2", problem), pending)

    async def _quit(self) -> None:
        try:
            await self.smtp.quit(timeout=min(self.command_timeout, 5.0))
        except (SMTPException, OSError, asyncio.TimeoutError):
            pass
