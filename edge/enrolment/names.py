"""People's names: one rule for a stick's manifest and for `edge enrol --name`.

A name is what the administrator reads in the gallery, the audit log and a stick's
report.txt, so it must show what it is: NFC, 1..64 characters, no control, format,
separator, private-use, unassigned or other invisible character, no space but U+0020.
Two names are one person when their `name_key`s (NFKC_Casefold, invisible characters
dropped) are equal, so duplicates and revokes are found across spellings, also for names
with invisible characters that an older version let in.
The whole rule, with examples: docs/enrolment.md, "Names".
"""

from __future__ import annotations

import unicodedata

from edge.errors import DoorlockError
from edge.service.untrusted import quote

MAX_NAME_CHARS = 64
MAX_MARKS_IN_A_ROW = 4
_REFUSED = {"Cc": "control characters", "Cf": "an invisible formatting character",
            "Zl": "a line separator", "Zp": "a paragraph separator",
            "Cs": "a surrogate code point", "Co": "a private-use character",
            "Cn": "an unassigned code point"}
# Invisible code points outside Cf (Default_Ignorable_Code_Point and look-alike blanks).
_INVISIBLE = frozenset([0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D,
                        0x180F, 0x2800, 0x3164, 0xFFA0]) | frozenset(range(0xFE00, 0xFE10)) \
    | frozenset(range(0xE0100, 0xE01F0))


class BadName(DoorlockError):
    """A name that breaks the rule above; the message says which part (one line)."""


def _problem(c: str) -> str | None:
    cat = unicodedata.category(c)
    if cat in _REFUSED:
        return _REFUSED[cat]
    if ord(c) in _INVISIBLE:
        return "an invisible character"
    if cat == "Zs" and c != " ":
        return "a space other than a plain space"
    return None


def check_name(name, what: str = "name") -> str:
    """The name in NFC, or BadName saying why it is refused (`what` names it: "name of
    person 3", "name to revoke")."""
    if not isinstance(name, str):
        raise BadName(f"{what} must be a string, got {quote(name)}")
    if len(name) > 4 * MAX_NAME_CHARS:   # (NFC never shortens a text by more)
        raise BadName(f"bad {what} {quote(name)} (1..{MAX_NAME_CHARS} characters, "
                      "no leading or trailing spaces)")
    name = unicodedata.normalize("NFC", name)
    marks = 0
    for i, c in enumerate(name):
        why = _problem(c)
        if why:
            code = f"U+{ord(c):04X}" + (f" {unicodedata.name(c)}" if unicodedata.name(c, "") else "")
            raise BadName(f"bad {what} {quote(name)} ({why}: {code})")
        marks = marks + 1 if unicodedata.category(c).startswith("M") else 0
        if marks and i == 0:
            raise BadName(f"bad {what} {quote(name)} (starts with a combining mark)")
        if marks > MAX_MARKS_IN_A_ROW:
            raise BadName(f"bad {what} {quote(name)} (more than {MAX_MARKS_IN_A_ROW} combining "
                          "marks in a row)")
    if not name or name != name.strip() or len(name) > MAX_NAME_CHARS:
        raise BadName(f"bad {what} {quote(name)} (1..{MAX_NAME_CHARS} characters, "
                      "no leading or trailing spaces)")
    if "  " in name:
        raise BadName(f"bad {what} {quote(name)} (two spaces in a row)")
    return name


def name_key(name: str) -> str:
    """What two names must share to be one person: invisible characters dropped, then
    NFKC and casefold (twice, as NFKC_Casefold needs), spaces collapsed."""
    kept = "".join(c for c in name if not _problem(c) or unicodedata.category(c) == "Zs")
    key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())
    return " ".join(key.split())


def same_person(names, name: str) -> list[str]:
    """The names among `names` (e.g. a gallery's) that are the same person as `name`."""
    key = name_key(name)
    return [n for n in names if name_key(n) == key]


def shown(name: str) -> str:
    """A name from storage (maybe let in by an older version) safe to print on one line:
    as it is when printable, else quoted with its invisible characters escaped."""
    if len(name) > 4 * MAX_NAME_CHARS:
        return quote(name)
    if name.isprintable() and not any(_problem(c) for c in name):
        return name
    return "".join(c if c.isprintable() and not _problem(c) else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                    else f"\\U{ord(c):08x}") for c in name)
