"""Who may send what: the relay policy, as pure decisions.

Seed steps 1 and 2: a session is *registered* when its address is in a
registered network or it authenticated as a mailbox. Each recipient is split
into user and domain; a local domain needs an existing user, any other domain
needs a registered session. Decisions return an SMTP reply (refusal) or None.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..addresses import Address
from ..admin.registry import Registry
from ..config import Config
from ..replies import SmtpReply


def peer_label(network_client: str, login: str) -> str:
    """As which registered client or login a session counts, in a word or two."""
    if login:
        return f"login {login}"
    if network_client:
        return f"client {network_client}"
    return "unregistered"


@dataclass(frozen=True, slots=True)
class Peer:
    """What policy knows about the peer of one session (not a registered network: that is a Client)."""

    ip: str
    network_client: str = ""   # name of the registered client whose network matched
    login: str = ""            # mailbox key the session authenticated as
    helo: str = ""

    @property
    def registered(self) -> bool:
        return bool(self.network_client or self.login)

    @property
    def label(self) -> str:
        return peer_label(self.network_client, self.login)


class Policy:
    def __init__(self, config: Config, registry: Registry):
        self.config = config
        self.registry = registry

    def local_key(self, addr: Address) -> str | None:
        """The mailbox that receives mail for ``addr``, or None if not local.

        ``postmaster@`` every local domain always exists (RFC 5321 4.5.1) and
        is an alias of the configured postmaster mailbox.
        """
        if addr.is_literal or not self.config.is_local_domain(addr.domain):
            return None
        local = addr.local.lower()
        if local == "postmaster":
            return self.config.postmaster_mailbox
        key = f"{local}@{addr.domain}"
        return key if self.registry.has_mailbox(key) else ""

    def check_sender(self, peer: Peer, sender: Address | None) -> SmtpReply | None:
        if not peer.registered:
            if not self.config.policy.accept_unregistered_for_local:
                return SmtpReply(550, "5.7.1", f"Client host [{peer.ip}] is not registered: "
                                           "authenticate, or ask the administrator to register it")
            if self._helo_names_us(peer.helo):
                return SmtpReply(550, "5.7.1", "HELO/EHLO names this server, but you are not it")
            if sender is not None and not sender.is_literal and self.config.is_local_domain(sender.domain):
                return SmtpReply(550, "5.7.1", f"Sender <{sender}> is in a local domain: authenticate first")
        elif peer.login and not peer.network_client and sender is not None:
            if self.config.is_local_domain(sender.domain) and not self.owns(peer.login, sender):
                return SmtpReply(553, "5.7.1", f"Sender <{sender}> is not owned by {peer.login}")
        return None

    def owns(self, login: str, sender: Address) -> bool:
        """Whether mailbox ``login`` may send as ``sender``: its own address, or one delivered to it.

        So the postmaster mailbox may send as ``postmaster@`` every local domain.
        """
        return sender.key == login or self.local_key(sender) == login

    def check_recipient(self, peer: Peer, rcpt: Address) -> tuple[SmtpReply | None, str | None]:
        """Returns (refusal or None, local mailbox key or None for remote)."""
        key = self.local_key(rcpt)
        if key == "":
            return SmtpReply(550, "5.1.1", f"<{rcpt}>: no such user here"), None
        if key is not None:
            if peer.registered or self.config.policy.accept_unregistered_for_local:
                return None, key
            return SmtpReply(550, "5.7.1", f"Client host [{peer.ip}] is not registered"), None
        if not peer.registered:
            return SmtpReply(554, "5.7.1", f"<{rcpt}>: relay access denied"), None
        return None, None

    def _helo_names_us(self, helo: str) -> bool:
        name = helo.strip().lower().rstrip(".")
        return name == self.config.server.hostname.lower() or name in self.config.server.local_domains
