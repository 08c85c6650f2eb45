"""The operator's view of a database: a bar per shop and entity, jobs by state, what moves (objects Shopify exported,
lines imported, rows fetched, each with its rate), and the latest problems. `render` draws one frame; `watch`
redraws it in place on a terminal.

Units: a backfill queues a job per shop, entity and day (a snapshot: one per shop); runners merge consecutive days
into one Shopify operation as they dispatch them, so jobs fall in number while days stay: days done of days queued is
the measure of a long backfill."""

import sys
import time
from dataclasses import dataclass, field

import psycopg

BAR = 30


@dataclass
class Snapshot:
    at: float
    progress: list[tuple]  # shop, entity, total, completed, failed, queued, active, percent (of the time covered),
    # lines imported, rejected, days queued, days done, objects exported, rows fetched
    states: dict[str, int]  # jobs per state, every state in bulk_sync.job_states' order
    problems: list[tuple] = field(default_factory=list)  # time, job, shop, entity, status, message
    stuck: list[tuple] = field(default_factory=list)  # job, shop, entity, status, idle for, reason
    fresh: list[tuple] = field(default_factory=list)  # shop, entity, synced through, behind

    live: tuple[str, ...] = ()  # the states of jobs at work (neither queued nor terminal)

    @property
    def rows(self) -> int:
        """Lines imported."""
        return sum(p[8] for p in self.progress)

    @property
    def exported(self) -> int:
        return sum(p[12] for p in self.progress)

    @property
    def fetched(self) -> int:
        return sum(p[13] for p in self.progress)

    def days(self) -> str:
        """Days done of days queued over every shop and entity, e.g. '120/915' (shop-entity-days)."""
        return f"{sum(p[11] for p in self.progress):,.0f}/{sum(p[10] for p in self.progress):,.0f}"


def snapshot(conn: psycopg.Connection, problems: int = 5) -> Snapshot:
    """One frame's figures, read in one transaction with JIT off for it alone (the queries are small: compiling them
    costs more than running them). SET LOCAL, not SET: through a transaction pooler a session setting would stay
    on a server connection that other clients use next."""
    with conn.transaction():
        conn.execute("set local jit = off")
        return _read(conn, problems)


def _read(conn: psycopg.Connection, problems: int) -> Snapshot:
    progress = conn.execute(
        """select shop, entity, total, completed, failed, queued, active, percent, rows_imported::bigint,
                  rows_rejected::bigint, days_total, days_done, objects_exported::bigint, rows_fetched::bigint
           from bulk_sync.progress order by shop, entity"""
    ).fetchall()
    states = conn.execute(
        """select st.state, st.terminal, coalesce(sum(s.jobs), 0)::bigint
           from bulk_sync.job_states as st left join bulk_sync.status as s on s.status = st.state
           group by st.state, st.position, st.terminal order by st.position"""
    ).fetchall()
    recent = conn.execute(
        """select to_char(r.created_at, 'HH24:MI:SS'), r.job_id, j.shop, j.entity, r.status, r.message
           from bulk_sync.job_runs as r join bulk_sync.jobs as j on j.id = r.job_id
           where r.status in ('retry', 'failed') order by r.id desc limit %s""",
        (problems,),
    ).fetchall()
    stuck = conn.execute(
        """select id, shop, entity, status, date_trunc('second', idle_for)::text, reason
           from bulk_sync.stuck order by since"""
    ).fetchall()
    fresh = conn.execute(
        """select shop, entity, to_char(synced_through at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                  behind::text
           from bulk_sync.freshness order by shop, entity"""
    ).fetchall()
    live = tuple(state for state, terminal, _ in states if not terminal and state != "queued")
    counts = {state: jobs for state, _, jobs in states}
    return Snapshot(time.monotonic(), progress, counts, recent, stuck, fresh, live)


def _bar(percent: float) -> str:
    filled = round(BAR * percent / 100)
    return "[" + "#" * filled + "." * (BAR - filled) + "]"


def moving(snap: Snapshot, previous: Snapshot | None) -> str:
    """What moves, each with its rate since the previous frame: objects Shopify reported exported (its polls'
    objectCount), lines imported, rows fetched."""
    seconds = snap.at - previous.at if previous is not None and snap.at > previous.at else 0.0

    def rate(now: int, before: int) -> str:
        return f" ({(now - before) / seconds:,.0f}/s)" if seconds else ""

    was = previous or snap
    return (
        f"exported {snap.exported:,} objects{rate(snap.exported, was.exported)}, "
        f"imported {snap.rows:,} lines{rate(snap.rows, was.rows)}, "
        f"fetched {snap.fetched:,} rows{rate(snap.fetched, was.fetched)}"
    )


def _days(queued: float, done: float) -> str:
    return f"{done:,.0f}/{queued:,.0f}" if queued else "snapshot"


def render(snap: Snapshot, previous: Snapshot | None = None) -> str:
    if not snap.progress:
        return "no jobs yet: select bulk_sync.enqueue_backfill('2025-09-01', '2025-10-31');"
    total = sum(p[2] for p in snap.progress)
    completed = sum(p[3] for p in snap.progress)
    failed = sum(p[4] for p in snap.progress)
    shop_w = max(6, *(len(p[0]) + 2 for p in snap.progress))
    entity_w = max(8, *(len(p[1]) + 2 for p in snap.progress))
    days_w = max(12, *(len(_days(p[10], p[11])) + 2 for p in snap.progress))
    out = [
        f"bulk-sync  {time.strftime('%H:%M:%S')}  days {snap.days()} done, jobs {completed}/{total} completed, "
        f"{failed} failed  |  {moving(snap, previous)}",
        "",
        f"{'shop':<{shop_w}}{'entity':<{entity_w}}{'progress':<{BAR + 3}}{'done':>5}{'days':>{days_w}}{'jobs':>10}"
        f"{'failed':>8}{'active':>8}{'lines':>12}{'quarantined':>13}",
    ]
    for shop, entity, n, done, bad, _queued, active, pct, rows, rejected, days, days_done, *_ in snap.progress:
        out.append(
            f"{shop:<{shop_w}}{entity:<{entity_w}}{_bar(pct):<{BAR + 3}}{f'{pct:.0f}%':>5}"
            f"{_days(days, days_done):>{days_w}}{f'{done}/{n}':>10}{bad:>8}{active:>8}{rows:>12,}{rejected:>13,}"
        )
    out += ["", "jobs by state: " + ", ".join(f"{s} {n}" for s, n in snap.states.items() if n)]
    if snap.fresh:
        out += ["", "freshness (incremental sync): " + ", ".join(
            f"{shop} {entity} through {through} ({behind} behind)" for shop, entity, through, behind in snap.fresh
        )]  # fmt: skip
    if snap.stuck:
        out += ["", f"stuck: {len(snap.stuck)} jobs not progressing (select * from bulk_sync.stuck)"]
        out += [f"  job {job} {shop} {entity} {status}, idle {idle}: {reason}"[:160]
                for job, shop, entity, status, idle, reason in snap.stuck[:5]]  # fmt: skip
    if snap.problems:
        out += ["", "latest problems:"]
        out += [f"  {t}  job {job} {shop} {entity}  {status}: {msg}"[:160] for t, job, shop, entity, status, msg in
                snap.problems]  # fmt: skip
    return "\n".join(out)


def line(snap: Snapshot, previous: Snapshot | None, started: float) -> str:
    """One line of progress, for output that is not a terminal."""
    total = sum(p[2] for p in snap.progress)
    active = sum(snap.states.get(s, 0) for s in snap.live)
    doing = ", ".join(f"{n} {s}" for s in snap.live if (n := snap.states.get(s, 0)))  # the live states, by name
    return (
        f"{time.monotonic() - started:6.0f}s  days {snap.days()} done; jobs {snap.states.get('completed', 0)}/{total}"
        f" completed, {active} active{f' ({doing})' if doing else ''}, {snap.states.get('queued', 0)} queued, "
        f"{snap.states.get('failed', 0)} failed  |  {moving(snap, previous)}"
    )


def watch(
    conn: psycopg.Connection, interval: float = 2.0, stream=None, running=lambda: True, wait=time.sleep,
    lines: bool = False,
) -> None:  # fmt: skip
    """Redraws the view every `interval` s (in place on a terminal; elsewhere a whole frame, or with `lines` one
    line) while `running()`, waiting with `wait(interval)`; the last frame is drawn after `running()` turns false."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    previous, started = None, time.monotonic()
    while True:
        snap = snapshot(conn)
        if tty:
            stream.write("\x1b[H\x1b[J" + render(snap, previous) + "\n")
        else:
            stream.write(line(snap, previous, started) + "\n" if lines else render(snap, previous) + "\n\n")
        stream.flush()
        previous = snap
        if not running():
            return
        wait(interval)
