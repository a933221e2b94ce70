"""One readable line per core event, for ``mailtui serve`` and the console log."""

from __future__ import annotations

import time

from rich.text import Text

from .. import events as ev

_STYLES: dict[type[ev.Event], str] = {
    ev.ListenerStarted: "green", ev.ListenerFailed: "bold red", ev.ConnectionOpened: "dim",
    ev.ConnectionClosed: "dim", ev.ClientRefused: "red", ev.AuthFailed: "red", ev.AuthSucceeded: "cyan",
    ev.MessageAccepted: "bold", ev.DeliveredLocal: "green", ev.Queued: "yellow", ev.DnsLookup: "blue",
    ev.DeliveryAttempt: "magenta", ev.DeliveredRemote: "green", ev.Deferred: "yellow",
    ev.Bounced: "bold red", ev.QueueChanged: "cyan", ev.RegistryChanged: "cyan", ev.MailboxRetrieved: "cyan",
}


def _rcpts(items) -> str:
    items = list(items)
    return ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")


def describe(event: ev.Event) -> str | None:
    """Plain words for ``event``, or None for events too chatty to print."""
    match event:
        case ev.ListenerStarted():
            return f"{event.proto.upper()} listening on {event.address}"
        case ev.ListenerFailed():
            return f"{event.proto.upper()} cannot listen on {event.address}: {event.error}"
        case ev.ConnectionOpened():
            who = ""
            if event.proto == "smtp":
                who = f" (client {event.client})" if event.client else " (unregistered)"
            return f"{event.session} {event.proto} connect from {event.peer}{who}"
        case ev.ConnectionClosed():
            return f"{event.session} {event.proto} disconnect {event.peer}: {event.result}"
        case ev.SessionChanged():
            return None
        case ev.ClientRefused():
            target = f" <{event.address}>" if event.address else ""
            return f"{event.session} refused {event.peer} at {event.stage}{target}: {event.reply}"
        case ev.AuthFailed():
            return f"{event.session} {event.proto} login failed for {event.login!r} from {event.peer} " \
                   f"({event.failures} recent)"
        case ev.AuthSucceeded():
            return f"{event.session} {event.proto} logged in as {event.login}"
        case ev.MessageAccepted():
            return f"{event.session} accepted {event.msg_id} from <{event.sender}> to " \
                   f"{_rcpts(event.recipients)} ({event.size} bytes)"
        case ev.DeliveredLocal():
            return f"{event.msg_id} delivered to mailbox {event.mailbox}"
        case ev.Queued():
            return f"{event.msg_id} queued for {_rcpts(event.recipients)}"
        case ev.MailboxRetrieved():
            return f"{event.session} {event.mailbox}: {event.retrieved} retrieved, {event.deleted} deleted"
        case ev.DnsLookup():
            cached = " (cached)" if event.cached else ""
            answer = ", ".join(event.answer[:4]) or "-"
            return f"DNS {event.rtype} {event.name}: {event.rcode} {answer} " \
                   f"{event.duration * 1000:.0f} ms{cached}"
        case ev.DeliveryAttempt():
            return f"{event.msg_id} attempt {event.attempt} to {event.domain} for {_rcpts(event.recipients)}"
        case ev.DeliveredRemote():
            tls = " TLS" if event.tls else ""
            if event.mta_sts:
                tls += f" (MTA-STS {event.mta_sts}{', verified' if event.mta_sts == 'enforce' else ''})"
            reused = " (reused connection)" if event.reused else ""
            return f"{event.msg_id} delivered to {event.recipient} via {event.remote_mta}{tls}{reused}: " \
                   f"{event.reply}"
        case ev.Deferred():
            wait = max(0, event.next_attempt - time.time())
            return f"{event.msg_id} deferred {event.recipient}: {event.error} (retry in {wait:.0f} s)"
        case ev.Bounced():
            return f"{event.msg_id} bounced {event.recipient}: {event.error}"
        case ev.QueueChanged():
            return f"queue {event.action} {event.msg_id}".rstrip()
        case ev.RegistryChanged():
            return f"{event.what} {event.name} {event.action}"
        case ev.Notice():
            return event.text
    return None


def render(event: ev.Event) -> Text | None:
    text = describe(event)
    if text is None:
        return None
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    style = _STYLES.get(type(event), "")
    if isinstance(event, ev.Notice):
        style = {"error": "bold red", "warning": "yellow"}.get(event.level, "")
    return Text.assemble((stamp + " ", "dim"), (text, style))
