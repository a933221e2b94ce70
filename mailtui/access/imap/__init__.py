"""IMAP4rev1 (RFC 3501) server, layered as pymap is: parse → state → I/O.

Parse (pure: no I/O, no session state, nothing of mailtui outside this package)
    :class:`literals.CommandAssembler` (``feed_line``, ``feed_literal``, ``take``)
    collects one command, refusing an over-large literal before ``+`` is sent;
    :func:`parser.parse_command` → a :mod:`commands` dataclass, or
    :class:`errors.ParseError` (whose ``response()`` is the tagged BAD/NO line).
    :class:`message.MessageView` reads a stored message lazily;
    :func:`fetchitems.fetch_items` answers FETCH attributes for one message;
    :func:`search.matches` / :func:`search.needs` evaluate SEARCH programs;
    :mod:`mutf7` converts mailbox names; :class:`sequence.SequenceSet`
    resolves ``1:*``; :mod:`response` turns values into bytes.

State (no sockets; uses :mod:`mailtui.store` folders)
    :class:`session.ImapSession` (states named as in the RFC) and
    :func:`dispatch.handle`, which runs one command in its state;
    :mod:`mailboxcmds` and :mod:`messagecmds` hold the commands;
    :class:`selection.Selection` is a session's view of its mailbox and the
    RFC 3501 §7 rules for telling it what others changed; :mod:`listing`
    answers LIST/LSUB.

I/O
    :class:`server.ImapServer`: sockets, framing and limits, STARTTLS and
    implicit TLS, IDLE, connection accounting, events.
"""
