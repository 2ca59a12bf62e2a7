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
    return "\n".join(out) + "\n"


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
