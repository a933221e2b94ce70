"""Modal screens; each dismisses with a typed result (or None when cancelled)."""

from .confirm import ConfirmDialog
from .detail import Detail, DetailView
from .forms import ClientForm, ClientFormResult, MailboxForm, MailboxFormResult
from .help import HelpScreen
from .message import MessageView

__all__ = ["ClientForm", "ClientFormResult", "ConfirmDialog", "Detail", "DetailView", "HelpScreen", "MailboxForm", "MailboxFormResult",
           "MessageView"]
