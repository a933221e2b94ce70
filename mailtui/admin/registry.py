"""Registered clients (networks) and mailboxes (local accounts).

Seed step 1: mail is taken only from registered clients. A client is a named
set of networks; a mailbox is an address with a hashed password, and a
session that authenticates as a mailbox counts as registered too. Lookups are
served from memory; every change is written through to ``state.json``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ..addresses import AddressError, parse_address
from ..store.db import Store
from ..wire import peer_ip
from .passwords import check_strength, hash_password, verify_password

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
_LOCAL = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RegistryError(ValueError):
    """An admin request that cannot be done, with a one-line reason."""


@dataclass(frozen=True)
class Client:
    name: str
    networks: tuple[str, ...]
    note: str = ""
    created: float = 0.0


@dataclass(frozen=True)
class Mailbox:
    address: str
    created: float = 0.0


def parse_network(text: str) -> Network:
    """Parse a CIDR (or a single address); host bits set are an error."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise RegistryError(f"bad network {text!r}: {exc}") from None


def validate_client_name(name: str) -> str:
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise RegistryError(f"bad client name {name!r}: use letters, digits, space, '.', '_' or '-' (max 64)")
    return name


def normalize_mailbox(address: str, local_domains: tuple[str, ...]) -> str:
    """Validate a mailbox address: a plain local part in a local domain."""
    try:
        addr = parse_address(address)
    except AddressError as exc:
        raise RegistryError(f"bad address {address!r}: {exc}") from None
    local = addr.local.lower()
    if not _LOCAL.fullmatch(local) or ".." in local:
        raise RegistryError(f"bad address {address!r}: local part may hold only a-z 0-9 . _ + -")
    if addr.domain not in local_domains:
        raise RegistryError(
            f"{addr.domain!r} is not a local domain (server.local_domains = {list(local_domains)})")
    return f"{local}@{addr.domain}"


def network_table(clients: Iterable[tuple[str, Iterable[str]]]) -> list[tuple[Network, str]]:
    """(network, client name) for each of the clients' networks, most specific first.

    ``clients`` are (name, networks) pairs; a network that does not parse is skipped.
    """
    nets = []
    for name, networks in clients:
        for net in networks:
            try:
                nets.append((ipaddress.ip_network(net), name))
            except ValueError:
                continue
    nets.sort(key=lambda item: item[0].prefixlen, reverse=True)
    return nets


def match_network(table: list[tuple[Network, str]], ip: str) -> str | None:
    """The client of the first network in ``table`` (see :func:`network_table`) that holds ``ip``."""
    addr = peer_ip(ip)
    if addr is None:
        return None
    for net, name in table:
        if addr.version == net.version and addr in net:
            return name
    return None


class Registry:
    def __init__(self, store: Store, local_domains: tuple[str, ...],
                 on_change: Callable[[str, str, str], None] | None = None):
        self._store = store
        self.local_domains = local_domains
        self._clients = store.state.table("clients")
        self._mailboxes = store.state.table("mailboxes")
        self._on_change = on_change or (lambda what, name, action: None)
        self._networks: list[tuple[Network, str]] = []
        self._hashes: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Rebuild the in-memory indexes from TinyDB."""
        self._networks = network_table((doc["name"], doc.get("networks", [])) for doc in self._clients.all())
        self._hashes = {doc["address"]: doc["password"] for doc in self._mailboxes.all()}

    # -- clients -----------------------------------------------------------------

    def match(self, ip: str) -> str | None:
        """Name of the registered client whose network holds ``ip`` (most specific)."""
        return match_network(self._networks, ip)

    def clients(self) -> list[Client]:
        return sorted((Client(d["name"], tuple(d["networks"]), d.get("note", ""), d.get("created", 0.0))
                       for d in self._clients.all()), key=lambda c: c.name.lower())

    def get_client(self, name: str) -> Client | None:
        for client in self.clients():
            if client.name.lower() == name.lower():
                return client
        return None

    def add_client(self, name: str, networks: list[str], note: str = "") -> Client:
        name = validate_client_name(name)
        if self.get_client(name):
            raise RegistryError(f"a client named {name!r} already exists")
        nets = self._check_networks(networks)
        client = Client(name, nets, note.strip(), time.time())
        self._clients.insert({"name": name, "networks": list(nets), "note": client.note, "created": client.created})
        self.reload()
        self._on_change("client", name, "added")
        return client

    def update_client(self, name: str, *, new_name: str | None = None,
                      networks: list[str] | None = None, note: str | None = None) -> Client:
        old = self.get_client(name)
        if old is None:
            raise RegistryError(f"no client named {name!r}")
        target = validate_client_name(new_name) if new_name else old.name
        if target.lower() != old.name.lower() and self.get_client(target):
            raise RegistryError(f"a client named {target!r} already exists")
        nets = self._check_networks(networks) if networks is not None else old.networks
        doc = {"name": target, "networks": list(nets), "note": old.note if note is None else note.strip(),
               "created": old.created}
        self._clients.update(doc, lambda d: d["name"].lower() == old.name.lower())
        self.reload()
        self._on_change("client", target, "edited")
        return Client(doc["name"], nets, doc["note"], old.created)

    def remove_client(self, name: str) -> None:
        removed = self._clients.remove(lambda d: d["name"].lower() == name.strip().lower())
        if not removed:
            raise RegistryError(f"no client named {name!r}")
        self.reload()
        self._on_change("client", name, "removed")

    @staticmethod
    def _check_networks(networks: list[str]) -> tuple[str, ...]:
        if not networks:
            raise RegistryError("a client needs at least one network")
        parsed = [parse_network(n) for n in networks]
        seen: list[str] = []
        for net in parsed:
            if str(net) not in seen:
                seen.append(str(net))
        return tuple(seen)

    # -- mailboxes ---------------------------------------------------------------

    def mailboxes(self) -> list[Mailbox]:
        return sorted((Mailbox(d["address"], d.get("created", 0.0)) for d in self._mailboxes.all()),
                      key=lambda m: m.address)

    def has_mailbox(self, key: str) -> bool:
        return key in self._hashes

    def add_mailbox(self, address: str, password: str, *, replace: bool = False) -> Mailbox:
        """Validate, hash (slow: blocks for scrypt) and store; see :meth:`add_mailbox_async`."""
        key = self.check_new_mailbox(address, password, replace=replace)
        return self.store_mailbox(key, hash_password(password), replace=replace)

    async def add_mailbox_async(self, address: str, password: str, *, replace: bool = False) -> Mailbox:
        """As :meth:`add_mailbox`, with the scrypt hashing off the event loop."""
        key = self.check_new_mailbox(address, password, replace=replace)
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        return self.store_mailbox(key, hashed, replace=replace)

    def check_new_mailbox(self, address: str, password: str, *, replace: bool = False) -> str:
        """The mailbox key for ``address``, or RegistryError/PasswordError saying why not."""
        key = normalize_mailbox(address, self.local_domains)
        check_strength(password)
        if key in self._hashes and not replace:
            raise RegistryError(f"mailbox {key} already exists")
        return key

    def store_mailbox(self, key: str, hashed: str, *, replace: bool = False) -> Mailbox:
        exists = key in self._hashes
        if exists and not replace:
            raise RegistryError(f"mailbox {key} already exists")
        doc = {"address": key, "password": hashed, "created": time.time()}
        if exists:
            self._mailboxes.update({"password": doc["password"]}, lambda d: d["address"] == key)
        else:
            self._mailboxes.insert(doc)
        self.reload()
        self._on_change("mailbox", key, "password changed" if exists else "added")
        return Mailbox(key, doc["created"])

    def remove_mailbox(self, address: str) -> None:
        key = address.strip().lower()
        if not self._mailboxes.remove(lambda d: d["address"] == key):
            raise RegistryError(f"no mailbox {address!r}")
        self.reload()
        self._on_change("mailbox", key, "removed")

    async def verify(self, login: str, password: bytes | str) -> str | None:
        """Check a login off the event loop (scrypt is slow on purpose).

        Returns the mailbox key on success. Unknown logins cost the same time
        as known ones, so timing does not reveal which mailboxes exist.
        """
        key = login.strip().lower()
        stored = self._hashes.get(key) or _DUMMY_HASH
        ok = await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)
        return key if ok and key in self._hashes else None


_DUMMY_HASH = hash_password("not a real password, only spends time")
