"""Header fields of a raw message, byte for byte: cut into fields, or the values of one name.

For code that must not depend on a message being well-formed (forged
Authentication-Results, From domains of a message from anyone): nothing
here parses more than field boundaries, and nothing raises.
"""

from __future__ import annotations


def split_fields(head: bytes) -> list[bytes]:
    """The header section cut into fields, each with its continuation lines and line endings."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def field_values(head: bytes, name: bytes) -> list[bytes]:
    """The values of the fields called ``name`` (any case) in a header section."""
    wanted = name.lower()
    values = []
    for field in split_fields(head):
        field_name, colon, value = field.partition(b":")
        if colon and field_name.strip().lower() == wanted:
            values.append(value)
    return values
