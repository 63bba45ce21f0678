"""Summarize bench result lines (key=value ...) into markdown tables.
usage: python3 bench/table.py RESULTS_FILE

1. Medians per (workload, peer, n) of every numeric field seen (wall_s also
   shows min..max to make the noise visible).
2. Ratios: per workload, uvasync's median metric against each peer's,
   "N.Nx faster" / "N.Nx slower" (for memory: "smaller" / "larger").
FAILED lines are listed at the end.
"""
import statistics
import sys
from collections import OrderedDict

# Metric compared per workload; lower is better unless in HIGHER_BETTER.
METRIC = {"spawn": "ns_per_op", "pingpong": "ns_per_op", "timers": "wall_s",
          "memory": "bytes_per_task", "to_thread_files": "ns_per_op",
          "echo": "req_per_s", "http_small": "req_per_s", "http_large": "mb_per_s"}
HIGHER_BETTER = {"req_per_s", "mb_per_s"}
KEYS = ("workload", "peer", "n", "conc")
ORDER = ["wall_s", "ns_per_op", "files_per_s", "req_per_s", "mb_per_s", "warm_ns_per_op", "rerun_ns_per_op", "bytes_per_task",
         "rss_delta_mb", "peak_rss_mb"]


def fmt(col, v):
    if col == "wall_s":
        return f"{v:.3f}"
    return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def main():
    groups, failed = OrderedDict(), OrderedDict()
    with open(sys.argv[1]) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("FAILED"):
                failed[line] = failed.get(line, 0) + 1
                continue
            if not line.startswith("workload="):
                continue
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            key = tuple(f.pop(k, "-") for k in KEYS[:3])
            groups.setdefault(key, []).append(f)

    cols = [c for c in ORDER if any(c in r for runs in groups.values() for r in runs)]
    med = {}
    print("| workload | peer | n | runs | " + " | ".join(cols) + " |")
    print("|" + "---|" * (4 + len(cols)))
    for key, runs in groups.items():
        cells = []
        for c in cols:
            vals = [float(r[c]) for r in runs if c in r]
            if not vals:
                cells.append("")
                continue
            m = statistics.median(vals)
            med[key + (c,)] = m
            cell = fmt(c, m)
            if c == "wall_s" and len(vals) > 1:
                cell += f" ({fmt(c, min(vals))}..{fmt(c, max(vals))})"
            cells.append(cell)
        print(f"| {' | '.join(key)} | {len(runs)} | " + " | ".join(cells) + " |")

    print("\nuvasync against each peer (medians; lower metric is better, "
          "except req_per_s):\n")
    print("| workload | metric | uvasync | peer | peer's | uvasync is |")
    print("|---|---|---|---|---|---|")
    for (wl, peer, n), _ in groups.items():
        if peer == "uvasync" or wl not in METRIC:
            continue
        metric = METRIC[wl]
        ours = med.get((wl, "uvasync", n, metric))
        theirs = med.get((wl, peer, n, metric))
        if ours is None or theirs is None:
            continue
        better, worse = ("smaller", "larger") if metric == "bytes_per_task" else ("faster", "slower")
        if metric in HIGHER_BETTER:  # compare as costs: 1/rate
            ours, theirs = 1 / ours if ours > 0 else 0, 1 / theirs if theirs > 0 else 0
        if ours <= 0 or theirs <= 0:
            verdict = "n/a"
        elif theirs >= ours:
            verdict = f"{theirs / ours:.1f}x {better}"
        else:
            verdict = f"{ours / theirs:.1f}x {worse}"
        shown = (med[(wl, "uvasync", n, metric)], med[(wl, peer, n, metric)])
        if metric in HIGHER_BETTER:
            verdict += f" ({shown[0] / shown[1]:.2f}x the rate)"
        print(f"| {wl} (n={n}) | {metric} | {fmt(metric, shown[0])} | {peer} | "
              f"{fmt(metric, shown[1])} | {verdict} |")

    if failed:
        print("\nFailed runs:\n")
        for line, count in failed.items():
            print(f"- {count}x {line}")


if __name__ == "__main__":
    main()
