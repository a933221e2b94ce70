"""A raw IMAP client for scripted dialogues: send exact bytes, read until the tagged reply.

Blocking sockets with a timeout on every read, so a server that hangs fails
the test instead of hanging it.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

TIMEOUT = 5.0


class Raw:
    def __init__(self, port: int, host: str = "127.0.0.1", *, tls: bool = False, timeout: float = TIMEOUT):
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls:
            sock = insecure_context().wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.buffer = b""
        self.greeting = self.line()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def line(self) -> bytes:
        """One response line with its CRLF (b"" at EOF)."""
        while b"\r\n" not in self.buffer:
            if not self._fill():
                rest, self.buffer = self.buffer, b""
                return rest
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def until(self, tag: bytes) -> bytes:
        """Everything up to and including the line tagged ``tag`` (literals read whole)."""
        out = b""
        while True:
            line = self.line()
            if not line:
                raise EOFError(f"connection closed before {tag!r}; got {out!r}")
            out += line
            literal = re.search(rb"\{(\d+)\}\r\n$", line)
            if literal:
                size = int(literal.group(1))
                while len(self.buffer) < size:
                    if not self._fill():
                        raise EOFError("connection closed inside a literal")
                out += self.buffer[:size]
                self.buffer = self.buffer[size:]
                continue
            if line.startswith(tag + b" "):
                return out

    def cmd(self, tag: str, text: str | bytes) -> bytes:
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag.encode())

    def login(self, user: str, password: str) -> bytes:
        return self.cmd("L1", f'LOGIN "{user}" "{password}"')

    def closed(self, wait: float = TIMEOUT) -> bool:
        """Whether the server hangs up within ``wait`` seconds (data before that is discarded)."""
        deadline = time.monotonic() + wait
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                return True
        return False


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
