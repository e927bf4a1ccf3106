"""A recorded history, its verdict and the faults injected, as one HTML file.

The file is self-contained: the history travels as JSON inside it, and a
small script of our own (timeline.js, with timeline.css) draws it as SVG, so
it opens from disk with no network. Each request is a bar from its start to
its end, labelled with what it did and what it got back, coloured by its
outcome (acknowledged, failed, unknown); lanes are users or worker processes
and threads (X-Worker), switchable. Each anomaly's witness is outlined and
joined, listed in a side panel; faults are shaded bands with their label.

A history longer than LIMIT operations is cut to windows around the
witnesses (without witnesses, its beginning), and the page says so: a
browser draws LIMIT bars quickly, a soak's millions it would not.

No library: a timeline is a few hundred lines of SVG, and the views that
explain a Flask state bug (a lane per worker thread) are our own anyway.
"""

import itertools
import json
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from loadtests.judge.history import UNKNOWN, Event, answer
from loadtests.judge.verdict import Anomaly, Verdict

LIMIT = 10_000  # operations drawn at most; Jepsen's timeline stops there too
HERE = Path(__file__).parent


def outcome(event: Event) -> str:
    """The bar's colour: acknowledged, failed (the app said no), unknown (no answer)."""
    if event.ok:
        return "ok"
    if event.status == 0 or event.outcome == UNKNOWN:
        return "unknown"
    return "failed"


def label(event: Event) -> str:
    what = event.op if event.arg is None else f"{event.op}({event.arg})"
    return f"{what} → {answer(event)}"


def worker_lane(worker: str) -> tuple[int, int, str]:
    """Lanes sorted by process, then thread: "pid 5223 · thread 5261"."""
    pid, _, thread = worker.partition("-")
    if not worker:
        return (1 << 62, 0, "no worker (no answer)")
    number = lambda text: int(text) if text.isdigit() else 0  # noqa: E731
    return (number(pid), number(thread), f"pid {pid} · thread {thread}" if thread else f"pid {pid}")


def positions(history: Sequence[Event], anomalies: Iterable[Anomaly]) -> list[list[int]]:
    """Where each witness's events sit in the history (the same objects, else equal ones)."""
    by_id = {id(event): i for i, event in enumerate(history)}
    found = []
    for anomaly in anomalies:
        places = []
        for event in anomaly.witness:
            place = by_id.get(id(event))
            if place is None:
                place = next((i for i, e in enumerate(history) if e == event), None)
            if place is not None:
                places.append(place)
        found.append(sorted(set(places)))
    return found


def windows(total: int, witnesses: list[list[int]], limit: int) -> list[int]:
    """Which operations to draw: all of them up to `limit`; beyond, the
    operations nearest each witness (in start order), as many as fit in
    `limit`: each witness widened alike, as far as the union allows."""
    if total <= limit:
        return list(range(total))
    shown = [places for places in witnesses if places]
    if not shown:
        return list(range(limit))

    def kept(radius: int) -> set[int]:
        drawn = {place for places in shown for place in places}
        for places in shown:
            drawn.update(range(max(0, places[0] - radius), min(total, places[-1] + radius + 1)))
        return drawn

    low, high = 0, total  # the widest radius whose windows fit, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(kept(middle)) <= limit else (low, middle - 1)
    drawn = kept(low)
    if low < total:  # one step wider overshoots: fill up to `limit` from it
        drawn.update(sorted(kept(low + 1) - drawn)[: limit - len(drawn)])
    return sorted(drawn)


def fault_bands(faults: Iterable[Any]) -> list[dict[str, Any]]:
    """Fault records (loadtests/faults/inject.py Fault, or dicts of its fields):
    name, at, seconds, detail."""
    bands = []
    for fault in faults:
        fields = fault if isinstance(fault, dict) else vars(fault)
        bands.append(
            {
                "name": fields["name"],
                "from": round(fields["at"] * 1000, 3),
                "to": round((fields["at"] + fields.get("seconds", 0.0)) * 1000, 3),
                "detail": fields.get("detail", ""),
            }
        )
    return bands


def timeline_data(
    title: str,
    history: Sequence[Event],
    verdict: Verdict,
    faults: Iterable[Any] = (),
    origin: float | None = None,
    limit: int = LIMIT,
    shown: Sequence[Anomaly] | None = None,
) -> dict[str, Any]:
    """The JSON the page draws. Times are milliseconds from `origin` (the
    time.monotonic() the faults' `at` counts from; else the first start).
    `shown`: the witnesses to list, if not the verdict's (e.g. a write that
    was retried and applied once, to set beside one applied twice)."""
    examples = verdict.examples if shown is None else list(shown)
    ordered = sorted(history, key=lambda e: e.start)
    witnesses = positions(ordered, examples)
    kept = windows(len(ordered), witnesses, limit)
    origin = min((e.start for e in ordered), default=0.0) if origin is None else origin
    ms = lambda t: round((t - origin) * 1000, 3)  # noqa: E731
    users = list(dict.fromkeys(ordered[i].user for i in kept))
    workers = sorted({ordered[i].worker for i in kept}, key=worker_lane)
    user_at = {user: n for n, user in enumerate(users)}
    worker_at = {worker: n for n, worker in enumerate(workers)}
    drawn_at = {place: n for n, place in enumerate(kept)}
    ops = []
    for place in kept:
        e = ordered[place]
        tip = f"{e.user} · {worker_lane(e.worker)[2]} · HTTP {e.status or 'none'}"
        tip += f"\nkey {e.key}" if e.key else ""
        tip += f"\n{e.error}" if e.error else ""
        ops.append(
            [
                ms(e.start),
                ms(e.end),
                user_at[e.user],
                worker_at[e.worker],
                label(e),
                tip,
                outcome(e),
            ]
        )
    # The cut stretches, each from its first start to the next drawn start.
    edges = [-1, *kept, len(ordered)]
    gaps = [
        [
            ms(ordered[a + 1].start),
            ms(ordered[b].start if b < len(ordered) else max(e.end for e in ordered[a + 1 :])),
            b - a - 1,
        ]
        for a, b in itertools.pairwise(edges)
        if b - a > 1
    ]
    note = ""
    if len(kept) < len(ordered):
        around = "the windows around the witnesses" if any(witnesses) else "its beginning"
        note = (
            f"This history has {len(ordered):,} operations; only {len(kept):,} are drawn, "
            f"{around} (a timeline draws at most {limit:,}). Hatched bands are cut."
        )
    return {
        "title": title,
        "total": len(ordered),
        "users": users,
        "workers": [worker_lane(worker)[2] for worker in workers],
        "ops": ops,
        "anomalies": [
            {
                "kind": anomaly.kind,
                "summary": anomaly.summary,
                "ops": [drawn_at[p] for p in places if p in drawn_at],
            }
            for anomaly, places in zip(examples, witnesses, strict=True)
        ],
        "faults": fault_bands(faults),
        "gaps": gaps,
        "note": note,
    }


def render(
    title: str,
    history: Sequence[Event],
    verdict: Verdict,
    faults: Iterable[Any] = (),
    origin: float | None = None,
    limit: int = LIMIT,
    shown: Sequence[Anomaly] | None = None,
) -> str:
    """The whole page, as text (the arguments: timeline_data's)."""
    data = timeline_data(title, history, verdict, faults, origin, limit, shown)
    # Inside <script>, "</" could close the element: JSON allows it escaped.
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    page = (HERE / "timeline.html").read_text()
    return (
        page.replace("{{title}}", escape(title))
        .replace("{{style}}", (HERE / "timeline.css").read_text())
        .replace("{{script}}", (HERE / "timeline.js").read_text())
        .replace("{{data}}", blob)  # last: nothing is looked for in the history's text
    )


def write_timeline(path: Path, *args: Any, **kwargs: Any) -> Path:
    """render() into `path` (its folder made if need be); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(*args, **kwargs), encoding="utf-8")
    return path
