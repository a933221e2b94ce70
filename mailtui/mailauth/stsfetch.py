"""Fetching an MTA-STS policy file over HTTPS (RFC 8461 3.3), to the address mailtui's resolver gives.

The connection goes to an address of ``mta-sts.<domain>`` from mailtui's
resolver (so the lookup is cached and logged with purpose ``MTA-STS``), with
SNI and certificate checks for that name. The request is HTTP/1.0, so the
answer is never chunked: one status line, headers, and a body of at most
64 KiB, read until the connection closes. Redirects are not followed (3.3),
and everything - connecting, the TLS handshake, the answer - shares one
deadline.

A hand-written GET rather than an HTTP library: what is needed is a tenth of
one (no keep-alive, redirects, cookies or chunking), and connecting to the
resolver's address while checking the certificate for the name is exactly
what a library makes awkward.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY = 64 * 1024
MAX_HEAD = 16 * 1024


class FetchError(Exception):
    """The policy could not be fetched; the text says why (for the log and the DNS check)."""


async def fetch_policy(host: str, addresses: list[str], context: ssl.SSLContext, *, port: int = 443,
                       timeout: float = 10.0) -> str:
    """The policy file at ``https://<host>/.well-known/mta-sts.txt``, tried at each address in turn."""
    if not addresses:
        raise FetchError(f"{host} has no address")
    problems: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            for address in addresses[:3]:
                try:
                    return await _fetch_from(host, address, port, context)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                    problems.append(f"{address}: {_describe(exc)}")     # try the next address
    except TimeoutError:
        problems.append(f"no answer within {timeout:g}s")
    except FetchError as exc:                                           # an answer, but not a policy
        problems = [str(exc)]
    raise FetchError(f"https://{host}{POLICY_PATH}: " + "; ".join(problems))


async def _fetch_from(host: str, address: str, port: int, context: ssl.SSLContext) -> str:
    reader, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=host,
                                                   limit=MAX_HEAD)
    try:
        writer.write(f"GET {POLICY_PATH} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: mailtui\r\n"
                     f"Accept: text/plain\r\n\r\n".encode("ascii"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if status != 200:
            where = f" to {headers['location'][:100]}" if "location" in headers else ""
            raise FetchError(f"HTTP status {status}{where} (redirects are not followed)"
                             if 300 <= status < 400 else f"HTTP status {status}")
        kind = headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        if kind != "text/plain":
            raise FetchError(f"content type {kind[:60]!r}, not text/plain")
        body = await _read_body(reader, headers)
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError("the policy is not UTF-8 text") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not (parts[1].isascii() and parts[1].isdigit()):
        raise ValueError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise ValueError("a chunked answer to an HTTP/1.0 request")
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ValueError(f"bad Content-Length {length[:20]!r}")
        if int(length) > MAX_POLICY:
            raise FetchError(f"the policy is {int(length)} bytes, over the {MAX_POLICY // 1024} KiB limit")
        return await reader.readexactly(int(length))
    body = bytearray()
    while len(body) <= MAX_POLICY:
        chunk = await reader.read(MAX_POLICY + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    raise FetchError(f"the policy is over the {MAX_POLICY // 1024} KiB limit")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not valid ({exc.verify_message})"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the connection closed early"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "HTTP header section too long"
    return str(exc) or type(exc).__name__


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """Certificates checked against ``ca_file`` (a PEM bundle), else the system trust store.

    Used both for policy fetches and, in ``enforce`` mode, for the MX's TLS:
    the certificate must be valid for the name connected to.
    """
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
