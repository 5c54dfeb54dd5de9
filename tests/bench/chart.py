"""Draws tests/bench/benchmarks.png from the chart.json that tests/bench/report.mjs writes.

    python chart.py CHART.json OUT.png

Top: throughput ratios against baselines measured in the same run: flashgate's edge answers
against an empty worker on the same workerd, and purchase.lua against the minimal seed script on
the same redis-server (with its goal). Bottom, when the run has them: the fleet simulator's
origin attempts per second and origin p99 per second against time, one line per run (colour:
isolates; solid: admission on, dashed: off), with the budget and 3x the idle p99.
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
    sim = c.get("sim") or []
    if sim:
        fig = plt.figure(figsize=(11, 8.6))
        grid = fig.add_gridspec(2, 2, width_ratios=[3, 2], height_ratios=[4.2, 4.4])
        a, b = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
        draw_sim(fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1]), sim)
    else:
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


def draw_sim(a, b, sim):
    """Origin attempts/s and origin p99 per second, one step line per run."""
    colours = ["#9b9b9b", "#4a90d9", "#d0021b", "#7b3fa0", "#2a9d3a"]
    sizes = sorted({r["isolates"] for r in sim})
    colour = {n: colours[i % len(colours)] for i, n in enumerate(sizes)}
    for r in sim:
        style = dict(color=colour[r["isolates"]], linestyle="-" if r["admission"] == "on" else "--", linewidth=1.4)
        # Second t covers [t, t + 1): a step from t to t + 1.
        t = r["t"] + [r["t"][-1] + 1] if r["t"] else []
        a.step(t, r["origin_attempts"] + r["origin_attempts"][-1:], where="post", label=r["name"], **style)
        # The idle second before the warm-up, drawn as [-1, 0), then the sale.
        p99 = [r["idle_p99_ms"]] + r["origin_p99_ms"]
        b.step([-1] + t, p99 + p99[-1:], where="post", label=r["name"], **style)
    budget = sim[0]["budget"]
    a.axhline(budget * 1.2, color="black", linewidth=1, linestyle=":")
    a.text(0.02, budget * 1.2, f" 1.2 x budget ({budget * 1.2:.0f}/s)", va="bottom", fontsize=8, transform=a.get_yaxis_transform())
    a.set_yscale("symlog", linthresh=10)
    a.set_ylim(bottom=0)
    a.set_xlabel("seconds after the start of the sale")
    a.set_ylabel("purchase attempts reaching the origin per second")
    a.set_title("Fleet simulator: origin attempts per second\n(INFO commandstats at the origin)", fontsize=10)
    a.legend(fontsize=7, loc="upper right")
    # The goal line of the largest fleet with admission on: 3x its own idle p99.
    top = max((r for r in sim if r["admission"] == "on"), key=lambda r: r["isolates"], default=sim[0])
    b.axhline(3 * top["idle_p99_ms"], color=colour[top["isolates"]], linewidth=1, linestyle=":")
    b.text(0.02, 3 * top["idle_p99_ms"], f" 3 x idle p99 of {top['name']}", va="bottom", fontsize=8, transform=b.get_yaxis_transform())
    b.axvline(0, color="black", linewidth=0.6)
    b.text(-0.5, 0.98, "idle", ha="center", va="top", fontsize=8, transform=b.get_xaxis_transform())
    b.set_yscale("log")
    b.set_xlabel("seconds after the start of the sale (before 0: idle)")
    b.set_ylabel("origin p99 per second, ms (PING probe)")
    b.set_title("Fleet simulator: origin p99 per second\n(a real-time probe thread on its own connection)", fontsize=10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
