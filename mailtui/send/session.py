"""An SMTP session with one mail host: opened once, then one mail transaction after another.

Behaviour follows Postfix's SMTP client where it matters: opportunistic
STARTTLS without certificate checks (a failed handshake is retried in
plaintext by the courier) unless TLS is required (MTA-STS enforce: then a
host without STARTTLS, or whose certificate fails the checks, is skipped
with a 4.7.x outcome, never used in plaintext), SIZE honoured before sending, BODY=8BITMIME when
offered (8-bit mail is still sent when it is not), SMTPUTF8 required for
mail that needs it, per-recipient results.

On a session that has carried a transaction, the next one starts with RSET.
With PIPELINING (RFC 2920) RSET, MAIL, every RCPT and DATA go in one write
and the replies are read in order; without it, one command at a time. A
recipient the peer would not take in this transaction (``452 4.5.3`` too
many recipients) goes in the next one, on the same connection.

Failures come out two ways. A reply about a recipient or the message is an
:class:`Outcome`. A connection that cannot go on (it closed, timed out, sent
garbage, or said 421) raises :class:`Broken`, which says who already has a
final answer and who does not: the courier then decides whether that is the
recipients' outcome or, on a reused connection, a reason to try a fresh one.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from ..replies import enhanced_status, one_line
from ..wire import dot_stuff
from .client import Reply, ReplyTimeout, SmtpConnection, SmtpIOError
from .connections import Destination
from .courier import Outcome


@dataclass(frozen=True, slots=True)
class Mail:
    """One message for one domain's recipients; ``body`` has CRLF line ends and a final CRLF."""

    sender: str
    recipients: list[str]
    body: bytes
    smtputf8: bool = False
    body_8bit: bool = False


class TryNext(Exception):
    """This address could not take the mail; try the next one."""

    def __init__(self, text: str, status: str = "4.4.1", code: int = 0,
                 remote_mta: str = "", reply: str = ""):
        super().__init__(text)
        self.outcome = Outcome(ok=False, permanent=False, code=code, status=status, text=text,
                               remote_mta=remote_mta, tls=False, reply=reply)


class TlsFailed(Exception):
    """STARTTLS was offered but the handshake failed; retry without it."""


class Broken(Exception):
    """The connection failed mid-way: ``done`` have a final answer, ``pending`` do not."""

    def __init__(self, problem: Outcome, done: dict[str, Outcome], pending: list[str]):
        super().__init__(problem.text)
        self.problem = problem
        self.done = done
        self.pending = pending

    def results(self) -> dict[str, Outcome]:
        """Everyone's outcome, if this connection was the last try."""
        return self.done | dict.fromkeys(self.pending, self.problem)


def too_many_recipients(reply: Reply) -> bool:
    """RFC 5321 4.5.3.1.10: "452 too many recipients", to be sent in a later transaction."""
    return reply.code == 452 and (enhanced_status(452, reply.text) == "4.5.3"
                                  or "too many recipients" in reply.text.lower())


class Session:
    """One connection to one mail host, for as many transactions as the cache allows."""

    def __init__(self, destination: Destination, helo: str, connect_timeout: float,
                 command_timeout: float):
        self.destination = destination
        self.helo = helo
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        host, address = destination.host, destination.address
        self.name = host if host.startswith("[") else f"{host}[{address}]"
        self.where = f"{self.name}:{destination.port}"
        self.conn: SmtpConnection | None = None
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.verified = False      # TLS with the certificate checked for the host's name
        self.uses = 0

    @property
    def usable(self) -> bool:
        return self.conn is not None and self.conn.usable

    def close(self, quit: bool = True) -> None:
        if self.conn is not None:
            self.conn.close(quit=quit)

    # -- outcomes ----------------------------------------------------------------------

    def said(self, reply: Reply, stage: str) -> str:
        return f"host {self.name} said: {reply.code} {one_line(reply.text)} (in reply to {stage})"

    def outcome(self, reply: Reply, stage: str) -> Outcome:
        code = reply.code
        ok, permanent = 200 <= code < 300, 500 <= code < 600
        return Outcome(ok=ok, permanent=permanent, code=code,
                       status=enhanced_status(code if (ok or permanent or 400 <= code < 500) else 451,
                                              reply.text),
                       text=self.said(reply, stage), remote_mta=self.destination.host,
                       tls=self.tls, reply=f"{code} {one_line(reply.text)}", reused=self.uses > 1,
                       verified=self.verified)

    def local(self, permanent: bool, status: str, text: str) -> Outcome:
        return Outcome(ok=False, permanent=permanent, code=0, status=status, text=text,
                       remote_mta=self.destination.host, tls=self.tls, verified=self.verified)

    def _trouble(self, exc: SmtpIOError, stage: str) -> Outcome:
        if isinstance(exc, ReplyTimeout):
            return self.local(False, "4.4.2", f"timeout talking to {self.where} (in reply to {stage})")
        return self.local(False, "4.4.2", f"lost connection with {self.where} (in reply to {stage})")

    # -- opening -----------------------------------------------------------------------

    async def open(self, tls_context: ssl.SSLContext | None, required: bool = False) -> None:
        """Connect, greet, EHLO and, with a ``tls_context``, STARTTLS when offered.

        Raises :class:`TryNext` when this address will not do, :class:`TlsFailed`
        when the TLS handshake failed (try again without). With ``required``
        (MTA-STS), no STARTTLS or a failed one is a :class:`TryNext` too.
        """
        d = self.destination
        try:
            self.conn, greeting = await SmtpConnection.open(d.address, d.port, self.connect_timeout)
        except (asyncio.TimeoutError, ReplyTimeout):
            raise TryNext(f"connection to {self.where} timed out") from None
        except ConnectionRefusedError:
            raise TryNext(f"connection refused by {self.where}") from None
        except SmtpIOError:
            raise TryNext(f"lost connection with {self.where} while waiting for the greeting") from None
        except OSError as exc:
            raise TryNext(f"cannot connect to {self.where}: {(exc.strerror or str(exc)).lower()}") from None
        if greeting.code != 220:
            raise TryNext(f"host {self.name} refused to talk to me: {greeting.code} {one_line(greeting.text)}",
                          status=enhanced_status(greeting.code, greeting.text)
                          if greeting.code >= 400 else "4.4.2",
                          code=greeting.code, remote_mta=d.host,
                          reply=f"{greeting.code} {one_line(greeting.text)}")
        await self._hello()
        if tls_context is not None and "starttls" in self.extensions:
            await self._starttls(tls_context, required)
        elif required:
            raise self._no_tls("4.7.4", "did not offer STARTTLS")

    def _no_tls(self, status: str, what: str, reply: Reply | None = None) -> TryNext:
        """This host cannot be used: the recipient domain's MTA-STS policy requires TLS."""
        said = f"{reply.code} {one_line(reply.text)}" if reply else ""
        return TryNext(f"MTA-STS requires TLS, but host {self.name} {what}", status=status,
                       code=reply.code if reply else 0, remote_mta=self.destination.host, reply=said)

    async def _starttls(self, context: ssl.SSLContext, required: bool) -> None:
        assert self.conn is not None
        try:
            reply = await self.conn.command(b"STARTTLS", self.command_timeout)
        except SmtpIOError as exc:
            raise TryNext(self._trouble(exc, "STARTTLS command").text, status="4.4.2",
                          remote_mta=self.destination.host) from None
        if reply.code != 220:
            if required:
                raise self._no_tls("4.7.4", f"refused STARTTLS: {reply.code} {one_line(reply.text)}", reply)
            return  # STARTTLS refused: carry on in plaintext, as Postfix does
        host = self.destination.host
        try:
            await self.conn.starttls(context, None if host.startswith("[") else host,
                                     self.command_timeout)
        except ssl.SSLCertVerificationError as exc:
            if required:
                raise self._no_tls("4.7.5", f"has no valid certificate for its name "
                                            f"({exc.verify_message})") from None
            raise TlsFailed() from None
        except (ssl.SSLError, OSError, asyncio.TimeoutError, SmtpIOError):
            if required:
                raise self._no_tls("4.7.5", "failed the TLS handshake") from None
            raise TlsFailed() from None
        self.tls = True
        self.verified = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        await self._hello()

    async def _hello(self) -> None:
        assert self.conn is not None
        stage = "EHLO command"
        try:
            reply = await self.conn.command(b"EHLO " + self.helo.encode("ascii"), self.command_timeout)
            if reply.code >= 500 and self.conn.usable:
                stage = "HELO command"
                reply = await self.conn.command(b"HELO " + self.helo.encode("ascii"),
                                                self.command_timeout)
        except SmtpIOError as exc:
            raise TryNext(self._trouble(exc, stage).text, status="4.4.2",
                          remote_mta=self.destination.host) from None
        if reply.code != 250:
            raise TryNext(self.said(reply, stage),
                          status=enhanced_status(reply.code, reply.text) if reply.code >= 400 else "4.4.2",
                          code=reply.code, remote_mta=self.destination.host,
                          reply=f"{reply.code} {one_line(reply.text)}")
        self.extensions = {}
        if stage == "EHLO command":
            for line in reply.text.split("\n")[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.lower()] = params

    # -- transactions ------------------------------------------------------------------

    def mail_options(self, mail: Mail) -> list[bytes] | Outcome:
        """The MAIL FROM parameters for this server, or why it cannot take the message at all."""
        if mail.smtputf8 and "smtputf8" not in self.extensions:
            return self.local(True, "5.6.7",
                               f"SMTPUTF8 is required, but was not offered by host {self.name}")
        options: list[bytes] = []
        size = len(mail.body)
        if "size" in self.extensions:
            limit = self.extensions["size"].strip()
            if limit.isdigit() and 0 < int(limit) < size:
                return self.local(True, "5.3.4", f"message size {size} exceeds size limit "
                                                  f"{int(limit)} of server {self.name}")
            options.append(b"SIZE=%d" % size)
        if mail.body_8bit and "8bitmime" in self.extensions:
            options.append(b"BODY=8BITMIME")
        if mail.smtputf8:
            options.append(b"SMTPUTF8")
        return options

    async def send(self, mail: Mail, *, pipelining: bool = True) -> dict[str, Outcome]:
        """Carry ``mail`` in as many transactions as the peer needs; an outcome per recipient.

        Raises :class:`Broken` if the connection fails on the way.
        """
        options = self.mail_options(mail)
        if isinstance(options, Outcome):
            return dict.fromkeys(mail.recipients, options)
        results: dict[str, Outcome] = {}
        pending = list(mail.recipients)
        while pending:
            transaction = _Transaction(self, mail, pending, options,
                                       pipelining and "pipelining" in self.extensions)
            try:
                pending = await transaction.run()
            except SmtpIOError as exc:
                raise Broken(self._trouble(exc, transaction.stage), results | transaction.results,
                             [r for r in pending if r not in transaction.results]) from None
            except _Closing as exc:
                raise Broken(exc.problem, results | transaction.results,
                             [r for r in pending if r not in transaction.results]) from None
            results |= transaction.results
        return results


class _Closing(Exception):
    """The peer is closing the connection (421), or will not reset it."""

    def __init__(self, problem: Outcome):
        super().__init__(problem.text)
        self.problem = problem


class _Transaction:
    """One MAIL transaction; ``results`` has the recipients answered for good."""

    def __init__(self, session: Session, mail: Mail, recipients: list[str], options: list[bytes],
                 pipelining: bool):
        assert session.conn is not None
        self.session = session
        self.conn = session.conn
        self.mail = mail
        self.recipients = recipients
        self.options = options
        self.pipelining = pipelining
        self.results: dict[str, Outcome] = {}
        self.stage = "MAIL FROM command"

    async def run(self) -> list[str]:
        """Run the transaction; the recipients left for the next one (too many for this one)."""
        session, mail = self.session, self.mail
        rset = session.uses > 0
        session.uses += 1
        mail_from = b" ".join([b"MAIL FROM:<" + mail.sender.encode("utf-8") + b">", *self.options])
        rcpts = [b"RCPT TO:<" + r.encode("utf-8") + b">" for r in self.recipients]
        if self.pipelining:
            group = ([b"RSET"] if rset else []) + [mail_from, *rcpts, b"DATA"]
            self.conn.write(b"\r\n".join(group) + b"\r\n")
        if rset:
            self._lockstep(b"RSET")
            reply = await self._reply("RSET command")
            if reply.code != 250:  # a session that cannot even reset is no use
                raise _Closing(session.local(False, "4.4.2", session.said(reply, self.stage)))
        self._lockstep(mail_from)
        reply = await self._reply("MAIL FROM command")
        accepted, later = await self._recipients(rcpts, refused=None if reply.code == 250 else reply)
        await self._data(accepted)
        return later

    async def _reply(self, stage: str) -> Reply:
        self.stage = stage
        reply = await self.conn.read_reply(self.session.command_timeout)
        if reply.code == 421:
            raise _Closing(self.session.outcome(reply, stage))
        return reply

    def _lockstep(self, line: bytes) -> None:
        """Without PIPELINING, write the command whose reply comes next."""
        if not self.pipelining:
            self.conn.write(line + b"\r\n")

    def _all(self, outcome: Outcome, recipients: list[str]) -> None:
        self.results.update(dict.fromkeys(recipients, outcome))

    async def _recipients(self, rcpts: list[bytes],
                          refused: Reply | None) -> tuple[list[str], list[str]]:
        """RCPT replies: who was accepted, and who is left for the next transaction.

        A ``refused`` MAIL FROM answers for everyone (RCPTs already pipelined
        still get their replies read).
        """
        if refused is not None:
            self._all(self.session.outcome(refused, "MAIL FROM command"), self.recipients)
            if not self.pipelining:
                return [], []
        accepted: list[str] = []
        later: list[str] = []
        for rcpt, line in zip(self.recipients, rcpts):
            self._lockstep(line)
            reply = await self._reply("RCPT TO command")
            if refused is not None:
                continue
            if reply.code in (250, 251):
                accepted.append(rcpt)
            elif accepted and too_many_recipients(reply):
                later.append(rcpt)
            else:
                self.results[rcpt] = self.session.outcome(reply, "RCPT TO command")
        return accepted, later

    async def _data(self, accepted: list[str]) -> None:
        if not accepted:
            if self.pipelining:  # DATA went with the group: its reply is due
                reply = await self._reply("DATA command")
                if reply.code == 354:  # RFC 2920 3.1: nobody to send to, end an empty message
                    self.conn.write(b".\r\n")
                    await self._reply("end of DATA command")
            return
        self._lockstep(b"DATA")
        reply = await self._reply("DATA command")
        if reply.code != 354:
            self._all(self.session.outcome(reply, "DATA command"), accepted)
            return
        self.stage = "end of DATA command"
        self.conn.write(dot_stuff(self.mail.body, True)[0] + b".\r\n")
        await self.conn.drain()
        reply = await self._reply("end of DATA command")
        self._all(self.session.outcome(reply, "end of DATA command"), accepted)
