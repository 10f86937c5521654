"""Plots the soak's RSS samples (seconds,rss_mib) as a PNG, with the 10 MiB allowance drawn
from the one-minute value."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

source, target = sys.argv[1], sys.argv[2]
with open(source, newline="") as f:
    rows = [(int(r["seconds"]), float(r["rss_mib"])) for r in csv.DictReader(f)]
minutes = [s / 60 for s, _ in rows]
rss = [r for _, r in rows]
at_minute = next((r for s, r in rows if s >= 60), rss[0])
fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
ax.plot(minutes, rss, color="#1f4e79", linewidth=1.5, label="server RSS")
ax.axhline(at_minute + 10, color="#b00020", linestyle="--", linewidth=1, label="1-minute value + 10 MiB (the limit)")
ax.axvline(1, color="#888888", linestyle=":", linewidth=1)
ax.set_xlabel("minutes of load (32 connections, read cache off)")
ax.set_ylabel("RSS (MiB)")
ax.set_ylim(0, max(max(rss), at_minute + 10) * 1.15)
ax.set_title("bankgraph soak: resident memory")
ax.grid(alpha=0.3)
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig(target)
