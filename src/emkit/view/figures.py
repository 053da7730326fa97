"""Figures only the viewer draws (the report's own come from `emkit.report.plots`).

Drawn with matplotlib's object API on Agg, labels passed through `plots.plain` (a model name
with `$` would otherwise be read as mathtext), written atomically into the app's private
figure directory under a content-hash name, so a page never shows a half-written PNG.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from emkit.report.plots import plain, save_png


def monitor_figure(points: list[dict[str, Any]], out_dir: Path) -> str:
    """Training-monitor preference (mean logp misaligned - aligned) against step, one line per
    model; returns the PNG's file name in `out_dir`."""
    tag = hashlib.sha256(json.dumps(points, sort_keys=True, default=str).encode()).hexdigest()
    name = f"{tag[:16]}_monitor.png"
    if (out_dir / name).is_file():
        return name
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot()
    models = list(dict.fromkeys(p["model"] for p in points))
    for i, model in enumerate(models):
        mine = [p for p in points if p["model"] == model and p["preference"] is not None]
        ax.plot([p["step"] for p in mine], [p["preference"] for p in mine], marker="o", ms=3,
                color=f"C{i % 10}", label=plain(model))
    ax.axhline(0.0, color="#888", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean logp(misaligned) \u2212 logp(aligned)")
    ax.set_title("misalignment preference on the monitor's probe pairs (higher = more EM)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    if models:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(fig, out_dir / name)
    return name
