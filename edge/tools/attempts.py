"""`python -m edge attempts`: what the door did for the people it recognised, from its audit log.

Rendered attacks and web video cannot say how often the liveness check keeps out an
enrolled person at a real door (BPCER); the door's own audit log can. Each attempt is a
run of frames in which recognition named the same person, with gaps of at most `--gap`
seconds; it was granted if the door opened for them, else the gates' reasons say why not.
Attempts shorter than `--min-seconds` that were not granted (someone passing by) are
counted apart. Names are shown only with `--by-person`. docs/liveness.md, "Measuring at
your own door", says how to read it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from edge.errors import DoorlockError
from edge.kiosk.gates import Event
from edge.service.audit import log_files, read_records
from edge.tools.outputs import NO_MATPLOTLIB, check_output, pyplot, save_figure, write_output

GRANTED = (Event.GRANTED, Event.OPEN)          # the door opened for them, or was open
RECOGNISED = (Event.PENDING, *GRANTED)         # the identity is in "identity"; refused: in "best"


@dataclass
class Attempt:
    who: str
    start: datetime
    last: datetime
    frames: int = 0
    granted_after_s: float | None = None
    reasons: Counter = field(default_factory=Counter)

    @property
    def seconds(self) -> float:
        return (self.last - self.start).total_seconds()

    @property
    def outcome(self) -> str:
        """"granted", or the refusal seen most often ("liveness: no sign of life yet", ...)."""
        if self.granted_after_s is not None:
            return "granted"
        if self.reasons:
            return self.reasons.most_common(1)[0][0]
        return "recognised in too few frames in a row"


def reason_key(reason: str) -> str:
    """The gate and its rule, without the figures: "liveness: no sign of life yet"."""
    parts = [p.strip() for p in str(reason).split(":")]
    return ": ".join(parts[:2])[:80] if len(parts) > 1 else parts[0][:80]


def _time(value) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def attempts(records, gap_s: float = 2.0) -> list[Attempt]:
    """Records (dicts, in the log's order) -> the attempts in them."""
    out: list[Attempt] = []
    cur: Attempt | None = None
    for r in records:
        t = _time(r.get("time"))
        if t is None:
            continue
        event = r.get("event")
        who = r.get("identity") if event in RECOGNISED else r.get("best") if event == Event.REFUSED else None
        who = who if isinstance(who, str) and who else None
        if cur is not None and ((t - cur.last).total_seconds() > gap_s or (who and who != cur.who)
                                or event in ("start", "stop")):
            out.append(cur)
            cur = None
        if who is None:
            continue
        if cur is None:
            cur = Attempt(who, t, t)
        cur.last, cur.frames = t, cur.frames + 1
        if event in GRANTED and cur.granted_after_s is None:
            cur.granted_after_s = (t - cur.start).total_seconds()
        if event == Event.REFUSED:
            cur.reasons[reason_key(r.get("reason", "refused"))] += 1
    if cur is not None:
        out.append(cur)
    return out


def counted(found: list[Attempt], min_seconds: float) -> list[Attempt]:
    """The attempts that count: granted, or at least `min_seconds` long (not passing by)."""
    return [a for a in found if a.granted_after_s is not None or a.seconds >= min_seconds]


def summary(found: list[Attempt], min_seconds: float, by_person: bool = False) -> dict:
    real = counted(found, min_seconds)
    granted = [a for a in real if a.granted_after_s is not None]
    times = [a.granted_after_s for a in granted]
    refused = Counter(a.outcome for a in real if a.granted_after_s is None)
    liveness = sum(n for k, n in refused.items() if k.startswith("liveness"))
    out = {
        "attempts": len(real), "passing_by": len(found) - len(real), "granted": len(granted),
        "granted_rate": len(granted) / len(real) if real else None,
        "time_to_grant_s": {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)),
                            "max": float(max(times))} if times else None,
        "not_granted": dict(refused.most_common()),
        "liveness_refused": liveness,
        "liveness_refusal_rate": liveness / len(real) if real else None,
        "first": min(a.start for a in found).isoformat() if found else None,
        "last": max(a.last for a in found).isoformat() if found else None,
    }
    if by_person:
        people: dict = {}
        for a in real:
            p = people.setdefault(a.who, {"attempts": 0, "granted": 0})
            p["attempts"] += 1
            p["granted"] += a.granted_after_s is not None
        out["people"] = dict(sorted(people.items()))
    return out


def format_summary(s: dict, min_seconds: float, gap_s: float) -> str:
    if not s["attempts"]:
        return (f"no attempt by a recognised person in the log ({s['passing_by']} shorter than "
                f"{min_seconds:g} s without a grant)")
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    lines = [f"attempts by recognised people: {s['attempts']} ({s['first'][:16]} to {s['last'][:16]}; an attempt: "
             f"frames naming one person, gaps up to {gap_s:g} s; {s['passing_by']} passing by, under "
             f"{min_seconds:g} s and not granted, left out)",
             f"granted: {s['granted']} ({pct(s['granted_rate'])})"]
    t = s["time_to_grant_s"]
    if t:
        lines[-1] += f"; time to grant median {t['median']:.1f} s, 90th percentile {t['p90']:.1f} s, longest {t['max']:.1f} s"
    if s["not_granted"]:
        lines.append("not granted, by the reason seen most in the attempt:")
        lines += [f"  {n:5d}  {k}" for k, n in s["not_granted"].items()]
    lines.append(f"liveness kept out a recognised person for a whole attempt: {s['liveness_refused']} of "
                 f"{s['attempts']} ({pct(s['liveness_refusal_rate'])}): the door's BPCER, if each attempt "
                 "was the enrolled person, meaning to come in (an attack it stopped counts here too)")
    for who, p in s.get("people", {}).items():
        lines.append(f"  {who}: {p['granted']} of {p['attempts']} granted")
    return "\n".join(lines)


def plot(found: list[Attempt], s: dict, path: Path) -> str:
    """attempts.png: the time to grant (histogram) and every attempt's outcome (bars)."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    times = [a.granted_after_s for a in found if a.granted_after_s is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    left.hist(times, bins=np.arange(0, max(times, default=1) + 0.5, 0.25), color="tab:green")
    left.set(xlabel="time to grant (s)", ylabel="attempts", title=f"granted: {s['granted']} of {s['attempts']}")
    labels = ["granted", *s["not_granted"]]
    counts = [s["granted"], *s["not_granted"].values()]
    right.barh(labels[::-1], counts[::-1], color=["tab:red"] * (len(labels) - 1) + ["tab:green"])
    right.set(xlabel="attempts", title="outcome of each attempt")
    from matplotlib.ticker import MaxNLocator

    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    save_figure(fig, path)
    return f"plot written to {path}"


def since_time(text: str, now: datetime) -> datetime:
    """--since: a date or time (UTC unless it says otherwise), or a span back from now
    ("7d", "12h", "30m")."""
    m = re.fullmatch(r"\s*(\d{1,5})\s*([dhm])\s*", text or "")
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: n})
    t = _time(text)
    if t is None:
        raise DoorlockError(f"--since {text!r}: a date or time like 2026-12-01 or 2026-12-01T08:00, "
                            "or a span back from now like 7d, 12h or 30m")
    return t


def cmd_attempts(args, *, now=None) -> int:
    from edge.config import load_config
    from edge.service.fsutil import utc_now

    if not 0.1 <= args.gap <= 60:
        raise DoorlockError(f"--gap {args.gap:g}: between 0.1 and 60 s")
    if not 0 <= args.min_seconds <= 600:
        raise DoorlockError(f"--min-seconds {args.min_seconds:g}: between 0 and 600")
    since = since_time(args.since, (now or utc_now)()) if args.since else None
    check_output(args.json, "--json")
    check_output(args.plot, "--plot")
    path = Path(args.log) if args.log else Path(load_config(args.config).audit.path)
    files = log_files(path)
    if not files:
        raise DoorlockError(f"no audit log at {path} (give --log, or --config with its [audit] path)")
    counts: Counter = Counter()

    def records():
        for f in files:
            for r in read_records(f, counts):
                if since is not None and ((t := _time(r.get("time"))) is None or t < since):
                    continue
                counts["records"] += 1
                yield r

    found = attempts(records(), args.gap)
    s = summary(found, args.min_seconds, args.by_person)
    bad = counts["damaged"] + counts["long"]
    s.update(files=[str(f) for f in files], records=counts["records"], damaged_lines=bad)
    print(format_summary(s, args.min_seconds, args.gap))
    if bad:
        print(f"{bad} damaged or foreign lines skipped")
    if args.json:
        write_output(args.json, json.dumps(s, indent=1))
        print(f"report written to {args.json}")
    if args.plot:
        print(plot(counted(found, args.min_seconds), s, Path(args.plot)))
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    a = sub.add_parser("attempts", help="what the door did for the people it recognised (the audit log): "
                                        "granted, how fast, what kept them out",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    a.add_argument("--log", help="the audit log (default: --config's [audit] path, or the built-in default)")
    a.add_argument("--config", help="kiosk configuration TOML, for its [audit] path")
    a.add_argument("--since", help="only records from this date or time on (e.g. 2026-12-01T08:00; UTC "
                                   "unless it says otherwise), or this far back: 7d, 12h, 30m")
    a.add_argument("--gap", type=float, default=2.0,
                   help="longest gap between two frames of one attempt (default %(default)s s)")
    a.add_argument("--min-seconds", type=float, default=1.0,
                   help="a shorter attempt without a grant is someone passing by (default %(default)s s)")
    a.add_argument("--by-person", action="store_true", help="also list each person's attempts (names)")
    a.add_argument("--json", help="also write the figures to this file")
    a.add_argument("--plot", metavar="PNG", help="also plot the time to grant and the outcomes (needs matplotlib)")
    a.set_defaults(func=cmd_attempts)
    return a
