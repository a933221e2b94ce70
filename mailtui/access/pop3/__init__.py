"""POP3 server (RFC 1939, CAPA from RFC 2449, STLS from RFC 2595, AUTH PLAIN), in three layers.

* ``parse``: one command line -> ``(verb, args)`` or the ``-ERR`` reply; pure.
* ``session``: the RFC 1939 state machine for one connection; returns
  :class:`Pop3Reply` objects and never touches a socket (``bodies`` streams
  and dot-stuffs the messages it sends).
* ``server``: :class:`Pop3Server` owns the sockets, limits and timeouts,
  STLS, connection accounting, maildrop locks, the login throttle and events.
"""

from .bodies import dot_stuff, terminator
from .parse import MAX_COMMAND_LINE, Command, ProtocolError, parse_command
from .server import Pop3Server
from .session import Pop3Reply, Pop3Session, State

__all__ = ["MAX_COMMAND_LINE", "Command", "Pop3Reply", "Pop3Server", "Pop3Session", "ProtocolError", "State",
           "dot_stuff", "parse_command", "terminator"]
