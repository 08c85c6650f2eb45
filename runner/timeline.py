"""`bulk-sync timeline`: a picture of what the jobs did, read from the audit trail (bulk_sync.job_runs). One lane
per shop; in it, each job on a row of its own (rows reused once a job is done), labelled with its entity and days,
with a bar per Shopify operation (created to COMPLETED, or to how it ended), per download (COMPLETED to staged), per
wait for an import slot, per import (claimed to done) and per fetch of what a bulk query cannot export (refund
lines, imported to completed), on one time axis. Failed, retried, split and canceled jobs are marked where it
happened; a step whose runner vanished ends where the runner was last heard of, marked where its lease expired.
Plain SVG, no library."""

import datetime as dt
import re
from dataclasses import dataclass, field
from html import escape

import psycopg

from runner import sqlapi

ROWS = """
    select r.job_id, j.shop, j.entity, j.start_date, j.end_date, j.window_start is null, r.status, r.from_status,
           r.to_status, r.created_at, r.message, r.heard_at, r.lease_expired_at
    from bulk_sync.job_runs as r
    join bulk_sync.jobs as j on j.id = r.job_id
    where (%(shop)s::text is null or j.shop = %(shop)s)
      and r.job_id in (select job_id from bulk_sync.job_runs where created_at >= %(since)s)
    order by r.job_id, r.id
"""
OPERATION = re.compile(r"gid://shopify/BulkOperation/\d+")
# A bar lasts while a runner works on the job under a lease, by the task of that state (bulk_sync.job_states)
BARS = {"poll": "export", "download": "download", "import": "import", "fetch": "fetch"}
COLORS = {"export": "#4e79a7", "download": "#59a14f", "wait": "#c7c7c7", "import": "#b07aa1", "fetch": "#edc948"}
# outcomes of steps (job_runs.status), and the expiry of a lease (recover()'s rows)
MARKS = {"failed": "#d62728", "retry": "#ff7f0e", "split": "#17becf", "canceled": "#555555", "expired": "#8c564b"}
NAMES = {"wait": "import slot wait", "expired": "lease expired"}  # in the legend, where the class name is not enough
LEFT, RIGHT, TOP, ROW, GAP, WIDTH = 70, 20, 64, 12, 3, 1100
CHAR = 4.6  # the width of a label's character at font-size 8


@dataclass
class Bar:
    kind: str  # export, download, import, fetch
    state: str  # the job's state while it lasts
    start: dt.datetime
    end: dt.datetime | None = None  # None: still going
    ok: bool = True
    note: str = ""


@dataclass
class Job:
    id: int
    shop: str
    entity: str
    label: str = ""  # entity and days, e.g. "orders 09-01..09-07"
    bars: list[Bar] = field(default_factory=list)
    marks: list[tuple[str, dt.datetime, str]] = field(default_factory=list)  # (a MARKS key, when, why)

    def span(self, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """From its first bar or mark to its last (a bar still going ends now)."""
        times = [t for b in self.bars for t in (b.start, b.end or now)] + [m[1] for m in self.marks]
        return min(times), max(times)


def operations(items: list[Job]) -> int:
    """How many Shopify operations the jobs had: one export bar each."""
    return sum(1 for job in items for bar in job.bars if bar.kind == "export")


def duration(items: list[Job], now: dt.datetime | None = None) -> float:
    """Seconds from the first bar or mark to the last: the span the picture's axis and header show."""
    now = now or dt.datetime.now(dt.UTC)
    spans = [job.span(now) for job in items]
    return (max(f for _, f in spans) - min(b for b, _ in spans)).total_seconds() if spans else 0.0


def _label(entity: str, first: dt.date, last: dt.date, snapshot: bool) -> str:
    if snapshot:
        return f"{entity} snapshot"
    return f"{entity} {first:%m-%d}" + (f"..{last:%m-%d}" if last != first else "")


def jobs(conn: psycopg.Connection, shop: str | None = None, since: dt.datetime | None = None) -> list[Job]:
    """The jobs with a step since `since` (all when None), of one shop or all, each with its bars and marks."""
    states = {s.state: s for s in sqlapi.job_states(conn)}
    # after the download, a state no runner holds and not an end: waiting for an import slot or a runner to take it
    downloaded = min(s.position for s in states.values() if s.task == "download")
    waits = {s.state for s in states.values() if s.position > downloaded and not s.leased and not s.terminal}
    found: dict[int, Job] = {}
    args = {"shop": shop, "since": since or dt.datetime.min.replace(tzinfo=dt.UTC)}
    for row in conn.execute(ROWS, args):
        job_id, code, entity, first, last, snapshot, status, before, after, at, message, heard, expired = row
        job = found.setdefault(job_id, Job(job_id, code, entity, _label(entity, first, last, snapshot)))
        if heard is not None and before in states:  # its runner vanished: the step ended when it was last heard of
            _vanished(job, states[before], heard, expired, message or "")
        if after in states:
            _step(job, status, states.get(before), states[after], at, message or "", waits)
    return [job for job in found.values() if job.bars or job.marks]


def _vanished(
    job: Job, state: sqlapi.JobState, heard: dt.datetime, expired: dt.datetime, message: str
) -> None:  # fmt: skip
    """Ends the job's bar of `state` where its runner was last heard of, badly, and marks where its lease expired."""
    for bar in job.bars:
        if bar.end is None and bar.state == state.state:
            bar.end, bar.ok = max(heard, bar.start), False
    job.marks.append(("expired", expired, message))


def _step(
    job: Job, outcome: str, before: sqlapi.JobState | None, after: sqlapi.JobState, at: dt.datetime, message: str,
    waits: set[str],
) -> None:  # fmt: skip
    """Applies one audit row (a step from state `before` to `after` with its outcome) to the job's bars and marks;
    `waits`: the states drawn as a wait for an import slot.
    A bar ends well when the job moves on: to a later state that is not terminal, or to the one final terminal
    state that still answers for the window (completed)."""
    if before != after and before is not None:
        for bar in job.bars:
            if bar.end is None and bar.state == before.state:
                forward = after.position > before.position
                bar.end, bar.ok = at, forward and (not after.terminal or (after.final and after.covers_window))
        if after.leased and after.task in BARS:
            operation = OPERATION.search(message)
            job.bars.append(Bar(BARS[after.task], after.state, at, note=operation.group(0) if operation else ""))
        elif after.state in waits:
            job.bars.append(Bar("wait", after.state, at))
    if outcome in MARKS:
        job.marks.append((outcome, at, message))


def _rows(items: list[Job], now: dt.datetime) -> dict[int, int]:
    """A row in its shop's lane for every job: the first row free when the job begins."""
    ends: dict[str, list[dt.datetime]] = {}
    row = {}
    for job in sorted(items, key=lambda j: j.span(now)[0]):
        begin, finish = job.span(now)
        lane = ends.setdefault(job.shop, [])
        free = next((i for i, end in enumerate(lane) if end < begin), None)
        if free is None:
            lane.append(finish)
            free = len(lane) - 1
        lane[free] = finish
        row[job.id] = free
    return row


def svg(items: list[Job], now: dt.datetime | None = None, title: str = "bulk-sync timeline") -> str:
    """The jobs drawn as an SVG document."""
    now = now or dt.datetime.now(dt.UTC)
    if not items:
        return _document(WIDTH, 60, [f'<text x="{LEFT}" y="40">{escape(title)}: no jobs in this period</text>'])
    spans = [job.span(now) for job in items]
    t0, t1 = min(b for b, _ in spans), max(f for _, f in spans)
    span = max(duration(items, now), 1.0)
    plot = WIDTH - LEFT - RIGHT

    def x(t: dt.datetime) -> float:
        return LEFT + (t - t0).total_seconds() / span * plot

    rows = _rows(items, now)
    shops = sorted({j.shop for j in items})
    heights = {shop: (max(rows[j.id] for j in items if j.shop == shop) + 1) * ROW + 2 * GAP for shop in shops}
    lanes, y = {}, TOP
    for shop in shops:
        lanes[shop] = y
        y += heights[shop] + 6
    height = y + 30
    out = [
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LEFT}" y="34">{len(items)} jobs, {operations(items)} Shopify operations, {len(shops)} shops; '
        f"{t0:%Y-%m-%d %H:%M:%S} to {t1:%H:%M:%S} UTC ({span:.0f} s)</text>",
    ]
    legend = [*(("bar", k, c) for k, c in COLORS.items()), *(("mark", k, c) for k, c in MARKS.items())]
    lx = LEFT
    for shape, name, color in legend:
        if shape == "bar":
            out.append(f'<rect x="{lx}" y="42" width="18" height="8" fill="{color}"/>')
        else:
            out.append(_mark(lx + 9, 46, name, legend=True))
        out.append(f'<text x="{lx + 24}" y="50">{NAMES.get(name, name)}</text>')
        lx += 36 + 6 * len(NAMES.get(name, name))
    for shop, top in lanes.items():
        bottom = top + heights[shop]
        out.append(f'<rect x="{LEFT}" y="{top}" width="{plot}" height="{bottom - top}" fill="#f4f4f4"/>')
        out.append(f'<text x="{LEFT - 8}" y="{(top + bottom) / 2 + 4:.1f}" text-anchor="end">{escape(shop)}</text>')
    out += _axis(t0, span, plot, height - 26)
    for job in items:
        top = lanes[job.shop] + GAP + rows[job.id] * ROW
        for bar in job.bars:
            left, right = x(bar.start), x(bar.end or now)
            state = "ok" if bar.ok else "ended badly"
            state = "still going" if bar.end is None else state
            tip = (
                f"job {job.id} {job.label}: {NAMES.get(bar.kind, bar.kind)} {state}, "
                f"{((bar.end or now) - bar.start).total_seconds():.1f} s"
            )
            tip += f" ({bar.note})" if bar.note else ""
            style = "" if bar.ok and bar.end else ' fill-opacity="0.45"'
            out.append(
                f'<rect class="{bar.kind}" x="{left:.1f}" y="{top}" width="{max(right - left, 1.0):.1f}" '
                f'height="{ROW - 2}" fill="{COLORS[bar.kind]}"{style}><title>{escape(tip)}</title></rect>'
            )
        for kind, at, why in job.marks:
            out.append(_mark(x(at), top + (ROW - 2) / 2, kind, f"job {job.id} {job.label}: {kind}: {why}"))
        begin, finish = job.span(now)
        room = int((x(finish) - x(begin)) / CHAR)  # the label within the job's own span: rows are shared
        text = job.label if len(job.label) <= room else job.label[: max(room - 1, 0)] + "…" if room >= 4 else ""
        if text:  # a tag: dark on white, readable over any bar
            out.append(f'<rect x="{x(begin) + 1:.1f}" y="{top + 1}" width="{len(text) * CHAR + 2:.1f}" '
                       f'height="{ROW - 4}" rx="2" fill="#fff" fill-opacity="0.8"/>')  # fmt: skip
        out.append(
            f'<text class="label" x="{x(begin) + 2:.1f}" y="{top + ROW - 4}" font-size="8" fill="#222">'
            f"{escape(text)}<title>job {job.id}: {escape(job.label)}</title></text>"
        )
    return _document(WIDTH, height, out)


def _axis(t0: dt.datetime, span: float, plot: float, y: float) -> list[str]:
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800)
    step = next((s for s in steps if span / s <= 12), steps[-1])
    out = [f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + plot}" y2="{y}" stroke="#555"/>']
    for i in range(int(span // step) + 1):
        tx = LEFT + i * step / span * plot
        at = i * step
        label = f"{at} s" if span < 600 else f"{at // 60} min" if span < 7200 else f"{at // 3600}:{at // 60 % 60:02d} h"
        out.append(f'<line x1="{tx:.1f}" y1="{y}" x2="{tx:.1f}" y2="{y + 4}" stroke="#555"/>')
        out.append(f'<text x="{tx:.1f}" y="{y + 16}" text-anchor="middle" fill="#555">{label}</text>')
    return out


def _mark(cx: float, cy: float, kind: str, tip: str = "", legend: bool = False) -> str:
    title = f"<title>{escape(tip[:300])}</title>" if tip else ""
    shape = {
        "failed": f"M{cx - 4:.1f},{cy - 4:.1f} l8,8 m-8,0 l8,-8",
        "retry": f"M{cx:.1f},{cy - 4:.1f} L{cx + 4:.1f},{cy + 4:.1f} L{cx - 4:.1f},{cy + 4:.1f} Z",
        "split": f"M{cx:.1f},{cy - 5:.1f} L{cx + 4:.1f},{cy:.1f} L{cx:.1f},{cy + 5:.1f} L{cx - 4:.1f},{cy:.1f} Z",
        "canceled": f"M{cx - 4:.1f},{cy - 4:.1f} h8 v8 h-8 Z M{cx - 4:.1f},{cy + 4:.1f} l8,-8",
        "expired": f"M{cx - 4:.1f},{cy:.1f} a4,4 0 1,0 8,0 a4,4 0 1,0 -8,0 M{cx:.1f},{cy - 3:.1f} v3 h2",
    }[kind]
    filled = kind in ("retry", "split")
    paint = f'fill="{MARKS[kind]}"' if filled else f'stroke="{MARKS[kind]}" stroke-width="2" fill="none"'
    return f'<path class="{"legend" if legend else "mark-" + kind}" d="{shape}" {paint}>{title}</path>'


def _document(width: float, height: float, body: list[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
            f'viewBox="0 0 {width} {height:.0f}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height:.0f}" fill="white"/>',
            *body,
            "</svg>\n",
        ]
    )
