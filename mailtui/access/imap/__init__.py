"""IMAP4rev1 (RFC 3501) server core: the pure, socket-free layers.

Layered as pymap is (parse → state → I/O); this package is the parse side
plus the message and encoding helpers the state layer needs. Nothing here
does I/O, keeps session state or imports anything of mailtui outside it.

For the I/O layer
    :class:`literals.CommandAssembler` (``feed_line``, ``feed_literal``, ``take``)
    collects one command, refusing an over-large literal before ``+`` is sent;
    :func:`literals.literal_at_end` and :func:`literals.tag_of` are the facts it
    uses. :mod:`response` turns values into bytes.

For the session layer
    :func:`parser.parse_command` → a :mod:`commands` dataclass, or
    :class:`errors.ParseError` (whose ``response()`` is the tagged BAD/NO line).
    :class:`message.MessageView` reads a stored message lazily;
    :func:`fetchitems.fetch_items` answers FETCH attributes for one message;
    :func:`search.matches` / :func:`search.needs` evaluate SEARCH programs;
    :mod:`mutf7` converts mailbox names; :class:`sequence.SequenceSet`
    resolves ``1:*``.
"""
