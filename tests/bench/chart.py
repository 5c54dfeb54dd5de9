"""Draws tests/bench/benchmarks.png from the chart.json that tests/bench/report.mjs writes.

    python chart.py CHART.json OUT.png

Two panels of throughput ratios against baselines measured in the same run: flashgate's edge
answers against an empty worker on the same workerd, and purchase.lua against the minimal seed
script on the same redis-server (with its 0.8x goal).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, out):
    with open(src) as f:
        c = json.load(f)
    edge = [e for e in c["edge"] if e["ratio"] is not None]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})

    names = [e["name"] for e in edge][::-1]
    ratios = [e["ratio"] for e in edge][::-1]
    shade = {"forwarded": "#9b9b9b", "empty worker that logs": "#d5d5d5"}
    bars = a.barh(names, ratios, color=[shade.get(n, "#4a90d9") for n in names])
    a.axvline(1.0, color="black", linewidth=1, linestyle="--")
    a.text(1.0, 0.02, " empty worker = 1", transform=a.get_xaxis_transform(), va="bottom", fontsize=8)
    for bar, e in zip(bars, edge[::-1]):
        a.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():.2f}x ({e['rps']:.0f} req/s)", va="center", fontsize=8)
    a.set_xlim(0, max(ratios + [1.0]) * 1.45)
    a.set_xlabel(f"requests/s relative to an empty workers-rs worker ({c['empty_rps']:.0f} req/s)")
    a.set_title("Edge answers vs an empty worker\n(wrangler dev, same workerd)", fontsize=10)

    rb = c["rb"]
    b.barh(["seed.lua", "purchase.lua"], [1.0, rb["ratio"]], color=["#9b9b9b", "#4a90d9"])
    b.axvline(rb["goal"], color="#d0021b", linewidth=1, linestyle="--")
    b.text(rb["goal"], 1.45, f" goal {rb['goal']}x", color="#d0021b", va="bottom", fontsize=8)
    b.text(1.0, 0, f" {rb['seed']:.0f}/s", va="center", fontsize=8)
    b.text(rb["ratio"], 1, f" {rb['ratio']:.2f}x ({rb['purchase']:.0f}/s)", va="center", fontsize=8)
    b.set_xlim(0, 1.6)
    b.set_ylim(-0.6, 1.9)
    b.set_xlabel("EVALSHA calls/s relative to seed.lua")
    b.set_title("purchase.lua vs the minimal seed script\n(redis-benchmark, same redis-server)", fontsize=10)

    fig.suptitle(c["title"], fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
