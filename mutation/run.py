"""``make mutation``: mutmut over the modules that hold money, limits and routing.

Each module is mutated on its own, in a scratch copy of the tree (``.mutation/<name>/``),
running only the tests listed for it (unit tests on SQLite, the local Redis and loopback
fakes; never the subprocess gateway), so a run is bounded and modules do not share state.
The mutmut settings for a module are written into the scratch copy's ``pyproject.toml`` as
``[tool.mutmut]`` (mutmut 3 reads its configuration from there). The score counts
meaningful mutants only: those listed in ``mutation/equivalent.txt`` (a mutant name and a
one-line reason why it cannot change behaviour) are left out.

    python mutation/run.py [module ...] [--children N] [--min 90] [--baseline]

``--baseline`` leaves out the ``tests/**/test_*_rules.py`` files, to measure what the suite
killed before they were written.

Prints one line per module and exits 1 when any module scores below ``--min``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
EQUIVALENT = Path(__file__).resolve().parent / "equivalent.txt"
# mutmut's exit codes of a mutant's test run (mutmut/stats.py, 3.8.1)
KILLED = {1, 3, 36, 37, -24, 24, 152, 255}  # failed, pytest error, timeout, type check


@dataclass(frozen=True)
class Module:
    source: str  # path under src/
    tests: tuple[str, ...]
    deselect: str = ""  # a pytest -k expression of tests to leave out


MODULES: dict[str, Module] = {
    "ledger": Module(
        "imagegate/accounts/ledger.py",
        ("tests/unit/accounts/test_ledger.py", "tests/unit/accounts/test_ledger_rules.py"),
    ),
    "keys": Module(
        "imagegate/accounts/keys.py",
        ("tests/unit/accounts/test_keys.py", "tests/unit/accounts/test_keys_rules.py"),
        "concurrent_startup or migrate or migrations or sqlite_connection",
    ),
    "ratelimit": Module(
        "imagegate/accounts/ratelimit.py",
        ("tests/unit/accounts/test_ratelimit.py", "tests/unit/accounts/test_ratelimit_rules.py"),
    ),
    "idempotency": Module(
        "imagegate/accounts/idempotency.py",
        ("tests/unit/accounts/test_idempotency_rules.py", "tests/unit/accounts/test_ledger.py"),
    ),
    "pricing": Module(
        "imagegate/catalog/pricing.py",
        ("tests/unit/catalog/test_pricing.py", "tests/unit/catalog/test_pricing_rules.py"),
        "unpriced_model_is_402 or free_model_costs_zero or cost_comes_from_upstream "
        "or models_list_shows_pricing",
    ),
    "router": Module(
        "imagegate/routing/router.py",
        ("tests/unit/routing/test_router.py", "tests/unit/routing/test_router_rules.py"),
    ),
    "parser": Module("imagegate/api/fields.py", ("tests/unit/api/test_parser_rules.py",)),
}


def equivalents() -> dict[str, str]:
    """Mutant name -> why it is equivalent, from ``equivalent.txt`` (``name  reason``)."""
    found: dict[str, str] = {}
    for line in EQUIVALENT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            if not reason.strip():
                raise SystemExit(f"{EQUIVALENT}: {name} needs a one-line reason")
            found[name] = reason.strip()
    return found


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str, module: Module) -> Path:
    """A scratch tree for one module: src, tests and a pyproject with its [tool.mutmut]."""
    work = WORK / name.replace(" ", "-")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", pyproject)
    args = ["-p", "no:cacheprovider", "-q", "-m", "not postgres"]
    if module.deselect:
        args += ["-k", f"not ({module.deselect})"]
    pyproject += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["src/{module.source}"]\n'
        f"pytest_add_cli_args = {_toml_list(args)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(list(module.tests))}\n"
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(pyproject)
    return work


@dataclass
class Score:
    killed: int
    survived: list[str]
    equivalent: int
    other: dict[str, int]

    @property
    def meaningful(self) -> int:
        return self.killed + len(self.survived)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.meaningful if self.meaningful else 100.0


def score(work: Path, module: Module, known: dict[str, str]) -> Score:
    meta = work / "mutants" / "src" / (module.source + ".meta")
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    result = Score(0, [], 0, {})
    for mutant, code in sorted(exit_codes.items()):
        if mutant in known:
            result.equivalent += 1
        elif code in KILLED:
            result.killed += 1
        elif code == 0:
            result.survived.append(mutant)
        else:  # not run, no tests, suspicious: counted as surviving, and shown
            result.survived.append(mutant)
            result.other[str(code)] = result.other.get(str(code), 0) + 1
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="module", help=", ".join(MODULES))
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--min", type=float, default=90.0, help="lowest passing score (%%)")
    parser.add_argument("--baseline", action="store_true", help="without tests/**/test_*_rules.py")
    opts = parser.parse_args()
    unknown = [m for m in opts.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    known = equivalents()
    mutmut = Path(sys.executable).parent / "mutmut"
    lines, failed = [], False
    for name in opts.modules or list(MODULES):
        module = MODULES[name]
        if opts.baseline:
            tests = tuple(t for t in module.tests if not t.endswith("_rules.py"))
            if not tests:
                print(f"{name:12} no unit tests besides the rules tests", flush=True)
                continue
            module = Module(module.source, tests, module.deselect)
        work = prepare(f"{name} baseline" if opts.baseline else name, module)
        started = time.monotonic()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        run = subprocess.run(
            [str(mutmut), "run", "--max-children", str(opts.children)],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if run.returncode != 0:
            sys.stderr.write(run.stderr[-4000:])
            raise SystemExit(f"mutmut failed on {name} (exit {run.returncode})")
        result = score(work, module, known)
        seconds = time.monotonic() - started
        line = (
            f"{name:12} {result.percent:5.1f}%  {result.killed}/{result.meaningful} meaningful "
            f"mutants killed, {result.equivalent} equivalent  ({module.source}, {seconds:.0f} s)"
        )
        lines.append(line)
        print(line, flush=True)
        for mutant in result.survived:
            print(f"    survived: {mutant}", flush=True)
        if result.other:
            print(f"    not run or unclear (exit code: count): {result.other}", flush=True)
        failed |= result.percent < opts.min
    print("\n".join(["", "mutation score per module:", *lines]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
