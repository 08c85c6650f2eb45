"""A plain-text view of bulk_sync_progress and bulk_sync_status."""

import psycopg

_COLUMNS = ("shop", "entity", "total", "completed", "failed", "queued", "active", "percent", "rows_imported")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [header] + [tuple("" if v is None else str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def render(conn: psycopg.Connection) -> str:
    progress = conn.execute(f"select {', '.join(_COLUMNS)} from bulk_sync_progress order by shop, entity").fetchall()
    if not progress:
        return "no jobs yet: select enqueue_backfill('2025-09-01', '2025-10-31');"
    states = conn.execute(
        "select status, sum(jobs)::bigint from bulk_sync_status group by status order by status"
    ).fetchall()
    summary = ", ".join(f"{status} {count}" for status, count in states)
    return _table(_COLUMNS, progress) + f"\n\njobs by state: {summary}"
