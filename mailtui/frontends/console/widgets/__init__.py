"""The console's panels, one module each, and the table they share."""

from .activity import ActivityLog
from .clients import ClientsPanel, MailboxRow
from .connections import ConnectionsPanel
from .dns import DnsPanel
from .filter import FilterBar
from .log import LogPanel
from .queue import QueuePanel, QueueRow
from .status import StatusBar
from .table import Column, LiveTable

__all__ = ["ActivityLog", "ClientsPanel", "Column", "ConnectionsPanel", "DnsPanel", "FilterBar", "LiveTable",
           "LogPanel", "MailboxRow", "QueuePanel", "QueueRow", "StatusBar"]
