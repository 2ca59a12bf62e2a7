"""Turn py-spy's collapsed stacks (``py-spy record --format raw``) into a short table of
where a gateway's samples go: by part of the stack (uvicorn, Starlette, our admission,
the pipeline, the upstream client, the ledger, JSON, logging) and by function.

    python bench/profile_summary.py bench/results/profiles/small_c16.txt[.gz] [--top 15]

Shares are of all samples in the file (with ``--idle`` recordings, idle samples included,
so the ``idle`` group says how much of the time a thread waited). "Inclusive" counts a
sample for a group (or function) when any frame of its stack belongs to it; "self" counts
it only for the innermost frame, so self shares add up to 100 %. The machine is shared:
read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import gzip
import re
from collections import Counter
from pathlib import Path

# (group, pattern on "function (file:line)"), first match wins for a frame.
GROUPS: list[tuple[str, str]] = [
    ("logging", r"(/logging/|imagegate/obs/)"),
    ("JSON", r"(orjson|/json/|imagegate/api/body\.py)"),
    (
        "ledger/usage/db",
        r"(imagegate/accounts/(ledger|leases|usage|rollup|idempotency|entries)"
        r"|imagegate/db/|imagegate/generation/(charging|record)|sqlalchemy|sqlite3|psycopg)",
    ),
    (
        "admission/auth/rate",
        r"imagegate/(api/(admission|auth|state|disconnect|drain)"
        r"|accounts/(keys|ratelimit|limits|key_epoch|key_push))",
    ),
    (
        "upstream http (aiohttp/httpx)",
        r"(imagegate/upstream/|/aiohttp/|/httpx/|/httpcore/"
        r"|/yarl/|/multidict/)",
    ),
    ("pipeline/routing/providers", r"imagegate/(generation|routing|providers|catalog|media|core)/"),
    ("our api routes/middleware", r"imagegate/(api|app\.py)"),
    ("Starlette/FastAPI", r"(/starlette/|/fastapi/|/pydantic)"),
    ("uvicorn/h11/httptools", r"(/uvicorn/|/h11/|httptools)"),
    ("asyncio loop", r"(/asyncio/|uvloop|/anyio/)"),
]
# Innermost frames where a thread waits (py-spy samples some of them as active: a blocking
# C call it does not recognise). ``Runner.run`` as the innermost frame is uvloop's own C
# loop: its epoll wait and its native socket work, which py-spy cannot tell apart.
IDLE = re.compile(
    r"^(WriteBatcher\._work \(imagegate/db/batch\.py:118\)|QueueListener\.dequeue|_worker "
    r"\(concurrent/futures/thread|worker_thread \(|Condition\.wait|Event\.wait"
    r"|select \(selectors|_wait_for_tstate_lock|Thread\.join|SimpleQueue|Queue\.get)"
)
LOOP_NATIVE = re.compile(r"^Runner\.run \(")
THREADS = [
    ("event loop", re.compile(r"asyncio/runners\.py")),
    ("db writer (WriteBatcher)", re.compile(r"imagegate/db/batch\.py")),
    ("log writer (QueueListener)", re.compile(r"logging/handlers\.py")),
    ("thread pool (run_in_threadpool)", re.compile(r"(anyio/|concurrent/futures/thread)")),
]
# Frames every sample of a thread passes through (CLI, server start, thread start).
DRIVERS = re.compile(
    r"\((typer|_click|click)/|^(<module>|serve|run|main|asyncio_run) \(|^Server\.(run|serve) "
    r"|^Runner\.run |^Thread\.(_bootstrap|_bootstrap_inner|run) "
)
_COMPILED = [(name, re.compile(pattern)) for name, pattern in GROUPS]
_LINE = re.compile(r"^(.*) (\d+)$")


def group_of(frame: str) -> str:
    for name, pattern in _COMPILED:
        if pattern.search(frame):
            return name
    return "other"


def thread_of(frames: list[str]) -> str:
    joined = ";".join(frames)
    for name, pattern in THREADS:
        if pattern.search(joined):
            return name
    return "other thread"


def state_of(frames: list[str]) -> str:
    leaf = frames[-1]
    if IDLE.search(leaf):
        return "idle"
    if LOOP_NATIVE.search(leaf):
        return "loop native"
    return "active"


def function_of(frame: str) -> str:
    """``name (path/to/file.py:12)`` -> ``name (file.py)``: lines merged, paths shortened."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    name, path = match.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def read(path: Path) -> list[tuple[list[str], int]]:
    opener = gzip.open if path.suffix == ".gz" else open
    stacks = []
    with opener(path, "rt") as fh:
        for line in fh:
            match = _LINE.match(line.rstrip("\n"))
            if match:
                frames = [
                    f
                    for f in match.group(1).split(";")
                    if not f.startswith(("process ", "thread "))
                ]
                stacks.append((frames, int(match.group(2))))
    return stacks


def _table(stacks: list[tuple[list[str], int]], total: int, top: int) -> list[str]:
    incl_group: Counter[str] = Counter()
    self_group: Counter[str] = Counter()
    incl_func: Counter[str] = Counter()
    self_func: Counter[str] = Counter()
    for frames, n in stacks:
        self_group[group_of(frames[-1])] += n
        self_func[function_of(frames[-1])] += n
        for name in {group_of(f) for f in frames} - {"other"}:
            incl_group[name] += n
        for name in {function_of(f) for f in frames}:
            incl_func[name] += n

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}"

    out = ["| group | inclusive % | self % |", "|---|---:|---:|"]
    for name, n in sorted(incl_group.items(), key=lambda kv: -kv[1]):
        out.append(f"| {name} | {pct(n)} | {pct(self_group[name])} |")
    # Frames under nearly every sample (the loop, the server's run) say nothing: left out.
    useful = [
        (name, n)
        for name, n in incl_func.most_common()
        if n < 0.9 * total and not DRIVERS.search(name)
    ]
    out += ["", f"Top {top} functions by inclusive share:", ""]
    out += [f"  {pct(n)}  {name}" for name, n in useful[:top]]
    out += ["", f"Top {top} functions by self share:", ""]
    out += [f"  {pct(n)}  {name}" for name, n in self_func.most_common(top)]
    return out


def summarize(stacks: list[tuple[list[str], int]], top: int) -> str:
    stacks = [(frames, n) for frames, n in stacks if frames]
    total = sum(n for _, n in stacks) or 1
    by_thread: Counter[tuple[str, str]] = Counter()
    for frames, n in stacks:
        by_thread[(thread_of(frames), state_of(frames))] += n
    out = [f"{total} samples (all threads)", "", "| thread | active % | loop native % | idle % |"]
    out.append("|---|---:|---:|---:|")
    for thread in sorted({t for t, _ in by_thread}, key=lambda t: -by_thread[(t, "active")]):
        cells = [
            f"{100 * by_thread[(thread, s)] / total:.1f}" for s in ("active", "loop native", "idle")
        ]
        out.append(f"| {thread} | {' | '.join(cells)} |")
    active = [(f, n) for f, n in stacks if state_of(f) == "active"]
    busy = sum(n for _, n in active) or 1
    out += ["", f"Active samples ({busy}, every thread; shares of them):", ""]
    out += _table(active, busy, top)
    loop = [(f, n) for f, n in active if thread_of(f) == "event loop"]
    loop_n = sum(n for _, n in loop) or 1
    out += ["", f"Event loop thread only, active samples ({loop_n}; shares of them):", ""]
    out += _table(loop, loop_n, top)
    writer = [(f, n) for f, n in active if thread_of(f) == "db writer (WriteBatcher)"]
    writer_n = sum(n for _, n in writer) or 1
    out += ["", f"DB writer thread only, active samples ({writer_n}; shares of them):", ""]
    out += _table(writer, writer_n, top)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for path in args.files:
        print(f"## {path.name}\n")
        print(summarize(read(path), args.top))
        print()


if __name__ == "__main__":
    main()
