"""Reading text that comes from outside (a stick's manifest, doorlock.toml, access hours):
TOML with bounded nesting and string lengths, and short one-line quotes of hostile values
for error messages. Standard library only (the administrator's computer signs with it).

Why a scan before tomllib: Python's TOML parser recurses once per nested array or inline
table (40 KB of "[[[[" ends in RecursionError, a traceback) and takes quadratic time in
the parts of one dotted key (64 KB of "a.a.a..." takes seconds and builds a table 30,000
levels deep that nothing can print). `scan_toml` bounds both in one linear pass, skipping
strings and comments, before the parser sees the text; `check_tree` bounds the depth and
the string lengths of what it built.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from edge.errors import DoorlockError

MAX_DEPTH = 10          # arrays, inline tables and dotted-key parts: a manifest needs 4
QUOTE_CHARS = 60        # of a hostile value quoted in an error message


class TomlLimitError(DoorlockError):
    """Valid-looking TOML beyond the limits (nesting, string length); the message says which."""


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """repr(value) on one short line: cut to `limit` characters with its length noted.
    Never recurses without bound (a deep list is shown by type and size)."""
    if isinstance(value, (list, tuple, dict)) and not _shallow(value):
        return f"<a {type(value).__name__} nested too deeply>"
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return text[:limit] + "..." + size


def _shallow(value: Any, depth: int = 4) -> bool:
    stack = [(value, 0)]
    seen = 0
    while stack:
        v, d = stack.pop()
        seen += 1
        if d > depth or seen > 200:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend((x, d + 1) for x in v)
    return True


def one_line(text: str, limit: int = 400) -> str:
    """A message on one line of at most `limit` characters (line breaks and other
    control characters shown escaped)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text if len(text) <= limit else text[:limit] + "..."


_SPECIAL = re.compile(r"[#\"'\[\]{}=,\n.]")


def scan_toml(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse (TomlLimitError) TOML nested deeper than `max_depth` arrays and inline tables,
    or with a dotted key (or table name) of more than `max_depth` parts. One linear pass;
    strings and comments are skipped as TOML defines them. Syntax errors are left to the
    parser (which stays the judge of what is valid TOML)."""
    i, n, depth, dots, line = 0, len(text), 0, 0, 1
    while True:
        m = _SPECIAL.search(text, i)
        if m is None:
            return
        i = m.start()
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            i, line = _skip_string(text, i, c, line)
            continue
        if c in "[{":
            depth += 1
            dots = 0
            if depth > max_depth:
                raise TomlLimitError(f"nested more than {max_depth} levels deep (line {line})")
        elif c in "]}":
            depth = max(0, depth - 1)
            dots = 0
        elif c == ".":
            dots += 1
            if dots >= max_depth:
                raise TomlLimitError(f"a dotted key of more than {max_depth} parts (line {line})")
        else:   # = , newline
            dots = 0
            if c == "\n":
                line += 1
        i += 1


def _skip_string(text: str, i: int, q: str, line: int) -> tuple[int, int]:
    """The index after the string starting at text[i] (a quote), and the line it ends on."""
    n = len(text)
    if text.startswith(q * 3, i):           # multi-line: up to """ (or ''') not escaped
        j = i + 3
        while True:
            k = text.find(q * 3, j)
            if k < 0:
                return n, line
            if q == '"':
                b = k
                while b > j and text[b - 1] == "\\":
                    b -= 1
                if (k - b) % 2:             # an escaped quote: keep looking
                    j = k + 1
                    continue
            end = k + 3
            while end < n and end < k + 5 and text[end] == q:   # """a"""" is a" (TOML)
                end += 1
            return end, line + text.count("\n", i, end)
    j = i + 1
    while j < n:                            # one line: up to the quote, or the line's end
        c = text[j]
        if c == q:
            return j + 1, line
        if c == "\n":
            return j, line
        if c == "\\" and q == '"':
            j += 1
        j += 1
    return n, line


def check_tree(data: Any, max_depth: int = MAX_DEPTH, max_string: int | None = None) -> None:
    """Refuse parsed TOML deeper than `max_depth` or holding a string (key or value) of more
    than `max_string` characters. Iterative: any depth is safe to check."""
    stack = [(data, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            if d >= max_depth:
                raise TomlLimitError(f"nested more than {max_depth} levels deep")
            for k, x in v.items():
                if max_string is not None and len(k) > max_string:
                    raise TomlLimitError(f"a key of {len(k)} characters (limit {max_string}): "
                                         f"{quote(k)}")
                stack.append((x, d + 1))
        elif isinstance(v, list):
            if d >= max_depth:
                raise TomlLimitError(f"nested more than {max_depth} levels deep")
            stack.extend((x, d + 1) for x in v)
        elif isinstance(v, str) and max_string is not None and len(v) > max_string:
            raise TomlLimitError(f"a string of {len(v)} characters (limit {max_string}): {quote(v)}")


def load_toml(text: str, max_depth: int = MAX_DEPTH, max_string: int | None = None) -> dict:
    """tomllib.loads within bounds. Raises tomllib.TOMLDecodeError for broken TOML (as
    tomllib does) and TomlLimitError beyond the limits; never RecursionError."""
    scan_toml(text, max_depth)
    try:
        data = tomllib.loads(text)
    except RecursionError:   # not reached after the scan; a last guard all the same
        raise TomlLimitError(f"nested more than {max_depth} levels deep") from None
    check_tree(data, max_depth, max_string)
    return data
