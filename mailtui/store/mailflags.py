"""Message flags as Maildir keeps them: letters after ``:2,`` in the file name.

System flags have the letters of the Maildir spec (D F R S T); keywords
(``$Forwarded``, ``Work`` ...) get the letters ``a``-``z`` by their position
in the folder's ``mailtui-keywords`` file, as Dovecot's ``dovecot-keywords``
does, so a folder holds at most 26 distinct keywords. Letters we do not know
(``P`` for "passed") are kept as they are. The info string is always in
ASCII order, as the spec asks.
"""

from __future__ import annotations

from pathlib import Path

from .safeio import atomic_write

KEYWORDS_FILE = "mailtui-keywords"
MAX_KEYWORDS = 26
SYSTEM_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
LETTER_FLAGS = {letter: flag for flag, letter in SYSTEM_LETTERS.items()}
_SYSTEM_LOWER = {flag.lower(): flag for flag in SYSTEM_LETTERS}


class TooManyKeywords(Exception):
    """A folder already has 26 keywords."""


def canonical(flag: str) -> str:
    """System flags in their canonical case; keywords as given."""
    return _SYSTEM_LOWER.get(flag.lower(), flag)


class Keywords:
    """The keyword names of one folder, in letter order (blocking file access)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / KEYWORDS_FILE
        self.names: list[str] = []
        self._lower: dict[str, int] = {}

    def load(self) -> None:
        try:
            text = self.path.read_text("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        self.names = [line for line in text.split("\n") if line][:MAX_KEYWORDS]
        self._lower = {name.lower(): i for i, name in enumerate(self.names)}

    def letter(self, name: str) -> str | None:
        index = self._lower.get(name.lower())
        return None if index is None else chr(ord("a") + index)

    def need(self, names: list[str]) -> bool:
        """Give letters to new keywords, saving the file; True if it changed."""
        added = [n for n in dict.fromkeys(names) if n.lower() not in self._lower]
        if not added:
            return False
        if len(self.names) + len(added) > MAX_KEYWORDS:
            raise TooManyKeywords(f"a folder holds at most {MAX_KEYWORDS} keywords")
        names = self.names + added
        atomic_write(self.path, "".join(n + "\n" for n in names).encode("utf-8"))
        self.names = names
        self._lower = {name.lower(): i for i, name in enumerate(names)}
        return True


def info_of(flags: list[str] | tuple[str, ...], keywords: Keywords, keep: str = "") -> str:
    """The info letters for IMAP ``flags`` (keywords must already have letters).

    ``keep``: the old info, whose letters we do not manage (``P``) survive.
    """
    letters = {c for c in keep if c not in LETTER_FLAGS and not "a" <= c <= "z"}
    for flag in flags:
        letter = SYSTEM_LETTERS.get(canonical(flag)) or keywords.letter(flag)
        if letter:
            letters.add(letter)
    return "".join(sorted(letters))


def flags_of(info: str, keywords: Keywords) -> tuple[str, ...]:
    """IMAP flags of an info string: system flags first, then keywords."""
    out = [LETTER_FLAGS[c] for c in info if c in LETTER_FLAGS]
    for c in info:
        if "a" <= c <= "z":
            index = ord(c) - ord("a")
            if index < len(keywords.names):
                out.append(keywords.names[index])
    return tuple(out)


def split_name(file_name: str) -> tuple[str, str]:
    """``base:2,FS`` → (``base``, ``FS``); a name without info → (name, "")."""
    base, sep, info = file_name.partition(":2,")
    if not sep:
        base = file_name.split(":", 1)[0]
    return base, info
