"""Access hours: per-person windows (from the enrolment data), per-door windows, holidays.

`AccessHoursGate` (kiosk gate "hours") refuses a recognised person outside their own
hours or the door's, and on a holiday outside its "Hol" windows; hours that cannot be
read refuse that person (fail-secure). Windows are compared on the wall clock of
`[access] timezone`, so daylight-saving days behave as a clock on the wall does. A clock
before `BUILD_DATE` (a Pi without a real-time clock, booted offline) is wrong: restricted
people are refused and one "fault" line is logged until it is right again.
Window syntax, holidays and examples: docs/enrolment.md, "Access hours".
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.errors import DoorlockError
from edge.kiosk.gates import Gate
from edge.service.fsutil import utc_now
from edge.service.untrusted import quote

log = logging.getLogger(__name__)

BUILD_DATE = date(2026, 11, 23)   # this release; a clock before it is clearly wrong
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = {d: d for d in DAYS} | {"monday": "mon", "tuesday": "tue", "wednesday": "wed",
                                  "thursday": "thu", "friday": "fri", "saturday": "sat",
                                  "sunday": "sun", "tues": "tue", "thur": "thu", "thurs": "thu"}
HOLIDAY = "hol"
_TIME = re.compile(r"(\d{1,2}):(\d{2})\Z")
_START = re.compile(r"\d{1,2}:\d{2}\Z")      # the end of "<days> HH:MM" (linear: no nesting)
_DAY_LIST = re.compile(r"[A-Za-z][A-Za-z,\- ]*\Z")
MAX_HOURS_CHARS = 1000      # of one person's (or the door's) hours, all windows together
MAX_WINDOWS = 50


class HoursError(DoorlockError):
    """Access hours or a holiday that cannot be read."""


def _minutes(text: str, what: str) -> int:
    m = _TIME.match(text)
    if not m:
        raise HoursError(f"bad time {quote(text)} in {quote(what)} (expected HH:MM)")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi > 59 or h > 24 or (h == 24 and mi):
        raise HoursError(f"bad time {quote(text)} in {quote(what)} (00:00..24:00)")
    return 60 * h + mi


def _days(text: str, what: str) -> tuple[frozenset[int], bool]:
    """Weekday numbers (Mon = 0) and whether the window is for holidays."""
    text = text.strip().lower()
    if text in ("daily", "every day", "all", "*"):
        return frozenset(range(7)), False
    days: set[int] = set()
    holiday = False
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part in (HOLIDAY, "holiday", "holidays"):
            holiday = True
            continue
        a, _, b = part.partition("-")
        try:
            i = DAYS.index(_FULL[a.strip()])
            j = DAYS.index(_FULL[b.strip()]) if b else i
        except KeyError:
            raise HoursError(f"bad day {quote(part)} in {quote(what)} (Mon..Sun, Hol, daily)") from None
        k = i
        while True:
            days.add(k)
            if k == j:
                break
            k = (k + 1) % 7
    if not days and not holiday:
        raise HoursError(f"no days in {quote(what)}")
    return frozenset(days), holiday


@dataclass(frozen=True)
class Window:
    days: frozenset          # weekday numbers the window starts on (Mon = 0)
    holiday: bool            # starts on holidays ("Hol")
    start: int               # minutes after midnight
    end: int                 # minutes after midnight, 1..1440; end <= start: crosses midnight
    text: str

    def starts_on(self, day: date, is_holiday: bool) -> bool:
        return self.holiday if is_holiday else day.weekday() in self.days

    def contains(self, wall: datetime, holiday: Callable[[date], bool]) -> bool:
        """Is this wall-clock time inside the window (started today, or yesterday when it
        crosses midnight)?"""
        t = wall.hour * 60 + wall.minute
        today = wall.date()
        if self.start < self.end:
            return self.start <= t < self.end and self.starts_on(today, holiday(today))
        if t >= self.start and self.starts_on(today, holiday(today)):
            return True
        yesterday = today - timedelta(days=1)
        return t < self.end and self.starts_on(yesterday, holiday(yesterday))


@dataclass(frozen=True)
class Hours:
    """A set of windows; `always` when unrestricted."""

    windows: tuple[Window, ...]
    always: bool = False
    text: str = "always"

    def allows(self, wall: datetime, holiday: Callable[[date], bool]) -> bool:
        return self.always or any(w.contains(wall, holiday) for w in self.windows)


ALWAYS = Hours((), True)


def _split_window(text: str) -> tuple[str, str, str] | None:
    """("<days>" or "", "HH:MM", "HH:MM") of "[<days> ]HH:MM-HH:MM", or None. Parsed from
    the end without backtracking, so its time is linear in the text's length (the regular
    expression it replaces took 57 s on 64 KB of spaces)."""
    head, dash, end = text.strip().rpartition("-")
    end, head = end.strip(), head.rstrip()
    m = _START.search(head)
    if not dash or m is None or not _TIME.match(end):
        return None
    days = head[:m.start()]
    if days and not days[-1].isspace():
        return None
    days = days.rstrip()
    if days and not _DAY_LIST.match(days):
        return None
    return days, m.group(), end


def parse_window(text: str) -> Window:
    parts = _split_window(text)
    if parts is None:
        raise HoursError(f"bad access window {quote(text)} (expected e.g. \"Mon-Fri 07:00-19:00\")")
    days, holiday = _days(parts[0] or "daily", text)
    start, end = _minutes(parts[1], text), _minutes(parts[2], text)
    if start == 1440:
        raise HoursError(f"bad access window {quote(text)}: a window cannot start at 24:00")
    if start == end:
        raise HoursError(f"bad access window {quote(text)}: start equals end "
                         "(use 00:00-24:00 for the whole day)")
    return Window(days, holiday, start, end, " ".join(text.split()))


def parse_hours(value: Any) -> Hours:
    """Hours from enrolment data or config: None/""/[] or "always" = unrestricted;
    a string (windows separated by ";") or a list of strings. Raises HoursError."""
    if value is None:
        return ALWAYS
    if isinstance(value, str):
        size = len(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        size = sum(len(v) + 2 for v in value)
    else:
        raise HoursError(f"access hours must be a string or a list of strings, got {quote(value)}")
    if size > MAX_HOURS_CHARS:
        raise HoursError(f"access hours are too long ({size} characters, limit {MAX_HOURS_CHARS})")
    if isinstance(value, str):
        parts = [p for p in (x.strip() for x in value.split(";")) if p]
    else:
        parts = [p for v in value for p in (x.strip() for x in v.split(";")) if p]
    if len(parts) > MAX_WINDOWS:
        raise HoursError(f"{len(parts)} access windows, limit {MAX_WINDOWS}")
    if not parts or any(p.lower() == "always" for p in parts):
        return ALWAYS
    if any(p.lower() == "never" for p in parts):
        if len(parts) > 1:
            raise HoursError(f"\"never\" cannot be combined with windows: {quote(value)}")
        return Hours((), False, "never")
    windows = tuple(parse_window(p) for p in parts)
    return Hours(windows, False, "; ".join(w.text for w in windows))


class Holidays:
    """Dates ("2026-12-25"), ranges ("2026-12-24..2026-12-31") and yearly ("12-25")."""

    def __init__(self, items: Iterable[str] = ()):
        self.dates: set[date] = set()
        self.ranges: list[tuple[date, date]] = []
        self.yearly: set[tuple[int, int]] = set()
        for item in items:
            self._add(item)

    def _add(self, item: str) -> None:
        if not isinstance(item, str):
            raise HoursError(f"bad holiday {quote(item)} (expected \"YYYY-MM-DD\")")
        text = item.strip()
        try:
            if ".." in text:
                a, b = (date.fromisoformat(x.strip()) for x in text.split("..", 1))
                if b < a:
                    raise HoursError(f"bad holiday range {quote(item)}: ends before it starts")
                self.ranges.append((a, b))
            elif re.fullmatch(r"\d{2}-\d{2}", text):
                month, day = int(text[:2]), int(text[3:])
                date(2000, month, day)  # validates (2000 is a leap year: 02-29 is allowed)
                self.yearly.add((month, day))
            else:
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                    raise ValueError(text)
                self.dates.add(date.fromisoformat(text))
        except ValueError:
            raise HoursError(f"bad holiday {quote(item)} (expected \"YYYY-MM-DD\", "
                             "\"YYYY-MM-DD..YYYY-MM-DD\" or \"MM-DD\")") from None

    def __contains__(self, day: date) -> bool:
        return (day in self.dates or (day.month, day.day) in self.yearly
                or any(a <= day <= b for a, b in self.ranges))


def local_zone() -> tzinfo:
    """The system's time zone as a zoneinfo zone (DST rules included): $TZ, then the
    /etc/localtime link or file; UTC when none is set."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("TZ=%r is not a known time zone; using /etc/localtime", tz)
    lt = Path("/etc/localtime")
    try:
        target = os.readlink(lt)
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open(lt, "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def zone(name: str) -> tzinfo:
    """"local" or an IANA name ("Europe/Berlin", "UTC"); raises HoursError."""
    if name.strip().lower() == "local":
        return local_zone()
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursError(f"unknown time zone {quote(name)} (an IANA name like \"Europe/Berlin\", "
                         "or \"local\")") from None


class AccessHoursGate(Gate):
    """Refuses a recognised person outside their own hours, the door's hours or on a holiday.

    people: the gallery's per-person info (`gallery.people`), or a callable returning it
    (so a re-loaded gallery is seen). now: the current instant (aware). not_before: the
    earliest believable date (the build date)."""

    name = "hours"

    def __init__(self, people: Mapping[str, Mapping] | Callable[[], Mapping[str, Mapping]],
                 door_hours: Any = (), holidays: Iterable[str] = (), tz: str | tzinfo = "local",
                 *, now: Callable[[], datetime] = utc_now, not_before: date | None = None,
                 audit=None):
        self._people = people
        self.door_hours = parse_hours(list(door_hours) if not isinstance(door_hours, str) else door_hours)
        self.holidays = holidays if isinstance(holidays, Holidays) else Holidays(holidays)
        self.tz = zone(tz) if isinstance(tz, str) else tz
        self.now = now
        self.not_before = max(BUILD_DATE, not_before) if not_before else BUILD_DATE
        self.audit = audit
        self._cache: dict[str, tuple[Any, Hours | HoursError]] = {}
        self.clock_wrong = False

    def people(self) -> Mapping[str, Mapping]:
        return self._people() if callable(self._people) else self._people

    def hours_of(self, identity: str) -> Hours:
        """The person's hours (ALWAYS when unrestricted); raises HoursError when unreadable."""
        info = self.people().get(identity) or {}
        raw = info.get("hours") if isinstance(info, Mapping) else None
        cached = self._cache.get(identity)
        if cached is None or cached[0] != raw:
            try:
                result: Hours | HoursError = parse_hours(raw)
            except HoursError as exc:
                log.error("access hours of %r: %s; refusing them until re-enrolled", identity, exc)
                result = exc
            self._cache[identity] = cached = (raw, result)
        if isinstance(cached[1], HoursError):
            raise cached[1]
        return cached[1]

    def _fault(self, message: str) -> None:
        log.error("%s", message)
        if self.audit is not None:
            try:
                self.audit.write("fault", source="clock", error=message)
            except Exception as exc:
                log.error("audit log write failed: %s", exc)

    def check(self, identity: str, when: datetime | None = None) -> str | None:
        """The reason to refuse `identity` at `when` (default now), or None."""
        when = when if when is not None else self.now()
        if when.tzinfo is None:
            raise ValueError("check() needs an aware datetime")
        try:
            person = self.hours_of(identity)
        except HoursError as exc:
            return f"unreadable access hours in the enrolment ({exc})"
        restricted = not person.always or not self.door_hours.always
        wall = when.astimezone(self.tz)
        if wall.date() < self.not_before:
            if not self.clock_wrong:
                self.clock_wrong = True
                self._fault(f"clock is wrong: {wall.isoformat(timespec='seconds')} is before the "
                            f"build date {self.not_before.isoformat()}; people with restricted "
                            "hours are refused until it is set")
            if restricted:
                return f"clock not set (before {self.not_before.isoformat()})"
            return None
        if self.clock_wrong:
            self.clock_wrong = False
            log.warning("clock is right again: %s", wall.isoformat(timespec="seconds"))
        holiday = self.holidays.__contains__
        suffix = " on a holiday" if holiday(wall.date()) else ""
        if not self.door_hours.allows(wall, holiday):
            return f"outside the door's hours ({self.door_hours.text}){suffix}"
        if not person.allows(wall, holiday):
            return f"outside access hours ({person.text}){suffix}"
        return None

    def refuse(self, identity: str, frame_no: int) -> str | None:
        return self.check(identity)
