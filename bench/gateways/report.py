"""Write the bench results as JSON, a markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    out = [
        f"Run {meta['started']} on {meta['cpus']} CPUs, {meta['duration_s']} s per cell "
        f"(after a {meta['warmup_s']} s warm-up), wrk `-t min(2,c)`.",
        "",
        "| scenario | gateway | RPS | p50 ms | p99 ms | errors | peak RSS MB | CPU ms/req "
        "| answers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rss = "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"
        cpu = r.get("cpu_ms_per_req")
        cpu_text = "-" if cpu is None else f"{cpu:.2f}"
        out.append(
            f"| {r['scenario']} | {r['gateway']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} | {rss} | {cpu_text} | {r['answer']} |"
        )
    direct = _find(rows, "small c=1", "direct")
    if direct:
        out += ["", "Added p50 latency over calling the upstream directly (small, c=1):", ""]
        for r in rows:
            if r["scenario"] == "small c=1" and r["gateway"] != "direct":
                out.append(f"- {r['gateway']}: +{r['p50_ms'] - direct['p50_ms']:.2f} ms")
    checks = targets(rows)
    if checks:
        out += ["", "Issue 17's targets, from this run:", ""]
        out += [f"- {'met' if ok else 'MISSED'}: {text}" for ok, text in checks]
    return "\n".join(out) + "\n"


def targets(rows: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    """Each target of issue 17 that this run's rows can judge, met or not, with its figures."""
    checks: list[tuple[bool, str]] = []

    def row(scenario: str, gateway: str) -> dict[str, Any] | None:
        return _find(rows, scenario, gateway)

    ig, pk, ll = (row("small c=16", g) for g in ("imagegate", "portkey", "litellm"))
    if ig and pk and ll:
        ok = ig["rps"] >= 2 * pk["rps"] and ig["rps"] >= 10 * ll["rps"]
        checks.append(
            (
                ok,
                f"small c=16 RPS {ig['rps']:.0f} >= 2x Portkey's {pk['rps']:.0f} "
                f"and >= 10x LiteLLM's {ll['rps']:.0f}",
            )
        )
    direct, ig, pk = (row("small c=1", g) for g in ("direct", "imagegate", "portkey"))
    if direct and ig and pk:
        mine, theirs = ig["p50_ms"] - direct["p50_ms"], pk["p50_ms"] - direct["p50_ms"]
        checks.append(
            (mine <= theirs, f"added p50 at c=1 +{mine:.2f} ms <= Portkey's +{theirs:.2f} ms")
        )
    ig, ll = row("large c=4", "imagegate"), row("large c=4", "litellm")
    if ig and ll:
        checks.append(
            (
                ig["rps"] >= 4 * ll["rps"],
                f"large c=4 RPS {ig['rps']:.0f} >= 4x LiteLLM's {ll['rps']:.0f}",
            )
        )
    ig = row("slow c=500", "imagegate")
    if ig:
        rss = ig["rss_mb"] or 0.0
        ok = ig["p99_ms"] <= 2300 and ig["errors"] == 0 and rss <= 250
        checks.append(
            (
                ok,
                f"slow c=500 p99 {ig['p99_ms']:.0f} ms <= 2300 ms, "
                f"{ig['errors']} errors (0 allowed), peak RSS {rss:.0f} MB <= 250 MB",
            )
        )
    return checks


def _find(rows: list[dict[str, Any]], scenario: str, gateway: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == scenario and r["gateway"] == gateway), None)


COLORS = {
    "direct": "#999999",
    "imagegate": "#1f77b4",
    "imagegate-2w": "#17becf",
    "litellm": "#d62728",
    "portkey": "#2ca02c",
}


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    gateways = list(dict.fromkeys(r["gateway"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    width = 0.8 / len(gateways)
    for metric, ax, title in (
        ("rps", axes[0], "requests/s (log)"),
        ("p50_ms", axes[1], "p50 latency ms (log)"),
        ("p99_ms", axes[2], "p99 latency ms (log)"),
    ):
        for i, gw in enumerate(gateways):
            xs, ys = [], []
            for j, sc in enumerate(scenarios):
                row = _find(rows, sc, gw)
                if row is not None and row[metric] > 0:
                    xs.append(j + i * width)
                    ys.append(row[metric])
            ax.bar(xs, ys, width, label=gw, color=COLORS.get(gw))
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks([j + width * (len(gateways) - 1) / 2 for j in range(len(scenarios))])
        ax.set_xticklabels(scenarios, rotation=20, ha="right")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("imagegate vs LiteLLM vs Portkey, one nginx upstream, wrk (2-core machine)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "results.md").write_text(markdown(rows, meta))
    chart(rows, out / "results.png")
