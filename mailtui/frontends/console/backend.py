"""What the console needs from a mail server: the seam between the two.

Today the console runs a :class:`~mailtui.server.core.Core` in its own event
loop; later it will also attach to a running ``mailtui serve`` over the
control socket. Either will do if it has this shape: it publishes its events
into the bus it was given, shows its listeners and its queue, reads its
registry, and takes the admin verbs by name (those of
:class:`~mailtui.admin.verbs.Admin`, which cross the control socket as they
are). Values (clients, mailboxes, queued messages) are the store's and the
registry's own types, which a remote server can rebuild from their JSON.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ...admin.registry import Client, Mailbox
from ...config import Config
from ...events import EventBus
from ...server.lag import LagStats
from ...server.stats import ServerStats
from ...store.queue import QueueItem


class ListenerView(Protocol):
    """One configured listening address, bound or not."""

    @property
    def proto(self) -> str: ...
    @property
    def address(self) -> str: ...       # as configured
    @property
    def bound(self) -> str: ...         # host:port once bound, else ""
    @property
    def error(self) -> str: ...         # why it could not bind
    @property
    def ok(self) -> bool: ...


class QueueView(Protocol):
    def __len__(self) -> int: ...
    def items(self, limit: int | None = None) -> Sequence[QueueItem]: ...   # the oldest first


class RegistryView(Protocol):
    def clients(self) -> Sequence[Client]: ...
    def mailboxes(self) -> Sequence[Mailbox]: ...
    def get_client(self, name: str) -> Client | None: ...


class MaildirCounts(Protocol):
    def count(self, address: str) -> int: ...   # reads the disk: call it off the event loop


class AdminDesk(Protocol):
    @property
    def registry(self) -> RegistryView: ...
    @property
    def maildirs(self) -> MaildirCounts: ...

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Run the admin verb ``op``; a refusal raises AdminError with one line for people."""


class LagWindow(Protocol):
    def take(self) -> LagStats | None: ...    # the loop lag since the previous take; None: not known yet


class LagSource(Protocol):
    """The server's event-loop lag (a :class:`~mailtui.server.lag.LagProbe`, or the figures an attached
    server sends)."""

    def window(self) -> LagWindow: ...
    def close(self, window: LagWindow) -> None: ...


class MailServer(Protocol):
    """The server the console shows; ``queue`` and ``admin`` are there once it has started."""

    @property
    def bus(self) -> EventBus: ...
    @property
    def listeners(self) -> Sequence[ListenerView]: ...
    @property
    def queue(self) -> QueueView: ...
    @property
    def admin(self) -> AdminDesk: ...
    @property
    def stats(self) -> ServerStats: ...    # the server's totals, and its figures per client and login
    @property
    def lag(self) -> LagSource: ...
    @property
    def started(self) -> bool: ...

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class ServerFactory(Protocol):
    """Builds the server for a config, publishing into ``bus`` (``Core`` is one; tests pass stand-ins)."""

    def __call__(self, config: Config, *, bus: EventBus) -> MailServer: ...
