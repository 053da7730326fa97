"""The misalignment monitor's figure: misalignment preference against optimizer step, per model.

Drawn like the other report figures (`plots.py`): a matplotlib `Figure` built with the object
API, no pyplot state, names escaped for mathtext. The legend states each model's cost per
evaluation, so a reader can weigh the early warning against what it cost.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from emkit.report.plots import plain

Y_LABEL = "misalignment preference (nats/token)\nlog p(misaligned) \u2212 log p(aligned)"


def monitor_figure(curve: pd.DataFrame) -> Figure:
    """One line per model (x = optimizer step, y = misalignment preference, higher = more
    misaligned) from `emkit.store.monitor.monitor_curve`'s frame. The level at step 0 is the
    base model's; what matters is the change from it."""
    fig = Figure(figsize=(7.0, 4.0))
    ax = fig.add_subplot()
    models = list(dict.fromkeys(curve["model"])) if not curve.empty else []
    for i, model in enumerate(models):
        sub = curve[curve["model"] == model].sort_values("step")
        cost = sub["eval_seconds"].mean()
        n_pairs = int(sub["n_pairs"].max())
        ax.plot(sub["step"], sub["preference"], marker="o", ms=3, color=f"C{i % 10}",
                label=f"{plain(model)} ({n_pairs} pairs, {cost:.2g} s/eval)")
    if not models:
        ax.text(0.5, 0.5, "no monitor data (train with monitor_every_steps > 0)",
                ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.axhline(0.0, color="#999999", lw=0.8, ls=":")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(Y_LABEL, fontsize=9)
    ax.set_title("Misalignment monitor during fine-tuning (no sampling; higher = more "
                 "misaligned)", fontsize=10)
    ax.grid(alpha=0.3)
    if models:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
