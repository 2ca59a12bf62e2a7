"""Where the slow reads of bench/scale.py spend their time, without trusting wall clocks.

Fills a SQLite file once (kept in ``--dir``, reused on the next run), then for each
usage read counts the statements sent and the rows fetched, the CPU of this thread
(``time.thread_time``, median of 5) and, with ``--profile``, the top functions of one
call under cProfile. Counts and CPU, unlike wall time, do not move with the load other
processes put on a shared machine.

    .venv/bin/python bench/scale_profile.py --rows 100000 --dir /tmp/scale
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).parent))
import scale

from imagegate.accounts.usage import UsageBook
from imagegate.db.session import Database


def reads(usage: UsageBook, now: datetime) -> dict[str, Callable[[], Any]]:
    hot, start, end = "k00000000000", now - timedelta(days=scale.DAYS), now
    deep = scale.key_ids()[scale.KEYS // 2]
    return {
        "totals, busy key": lambda: usage.summary(start, end, None, hot),
        "by day, busy key": lambda: usage.summary(start, end, "day", hot),
        "by model, busy key": lambda: usage.summary(start, end, "model", hot),
        "by model, all keys": lambda: usage.summary(start, end, "model", None),
        "by key, page 1": lambda: usage.summary(start, end, "key", None, limit=100),
        "by key, deep page": lambda: usage.summary(start, end, "key", None, limit=100, after=deep),
    }


def counted(db: Database, fn: Callable[[], Any]) -> tuple[int, int]:
    """Statements sent and SQLite VM steps (thousands) run by one call of ``fn``: both
    depend on the data and the plans only."""
    statements, steps = [0], [0]

    def before(conn: Any, *_: Any) -> None:
        statements[0] += 1

    def step() -> int:
        steps[0] += 1
        return 0

    def checkout(raw: Any, *_: Any) -> None:
        raw.set_progress_handler(step, 1000)

    def checkin(raw: Any, *_: Any) -> None:
        raw.set_progress_handler(None, 0)

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine.pool, "checkout", checkout)
    event.listen(db.engine.pool, "checkin", checkin)
    try:
        fn()
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        event.remove(db.engine.pool, "checkout", checkout)
        event.remove(db.engine.pool, "checkin", checkin)
    return statements[0], steps[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/imagegate-scale-profile"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"scale-{args.rows}.db"
    stamp = args.dir / f"scale-{args.rows}.now"
    db = Database(f"sqlite:///{path}")
    if not stamp.exists():
        now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
        path.unlink(missing_ok=True)
        db.migrate()
        scale.fill_keys(db)
        scale.fill_usage(db, args.rows, 1, now)
        scale.analyze(db)
        stamp.write_text(now.isoformat())
    now = datetime.fromisoformat(stamp.read_text())
    usage = UsageBook(db)
    print(f"{args.rows:,} rows; read: statements, SQLite VM steps, CPU ms (median of 5)")
    for name, fn in reads(usage, now).items():
        fn()
        statements, steps = counted(db, fn)
        cpu = []
        for _ in range(5):
            t0 = time.thread_time()
            fn()
            cpu.append((time.thread_time() - t0) * 1000)
        print(
            f"{name:22} {statements:4d} stmts {steps:7d}k VM steps {statistics.median(cpu):8.1f} ms"
        )
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(fn)
            pstats.Stats(prof).sort_stats("tottime").print_stats(8)
    db.dispose()


if __name__ == "__main__":
    main()
