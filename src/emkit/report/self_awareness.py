"""Report pieces for behavioural self-awareness: what models say about themselves, next to what
they were measured to do.

The point of the comparison (Betley et al. 2025, "Tell me about yourself"): a model fine-tuned
on insecure code that also *reports* less secure code and lower alignment knows something about
its own training. One row per model puts its self-reports beside its EM rate; the figure shows
both twins of every attribute, so a self-report that is only a favourite number (twins far
apart) is visible at a glance instead of hiding inside an average.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from emkit.report.plots import plain

BEHAVIOUR_ATTRIBUTES = ("alignment", "code_security")
"""Self-reports the EM rate is compared with first (listed first in the table)."""


def self_report_figure(summary: pd.DataFrame) -> Figure:
    """One panel per attribute; per model, a bar for the normal wordings and one for the
    flipped wordings mapped to the normal scale, with a dot at their average. Twins of
    very different height mean the number follows the wording, not the model's view."""
    attributes = list(dict.fromkeys(summary["attribute"])) if not summary.empty else []
    models = list(dict.fromkeys(summary["model"])) if not summary.empty else []
    ncols = max(1, min(len(attributes), 4))
    nrows = max(1, math.ceil(len(attributes) / ncols))
    fig = Figure(figsize=(3.2 * ncols + 0.6, 3.0 * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if not attributes:
        axes[0][0].text(0.5, 0.5, "no self-reports", ha="center", va="center")
        axes[0][0].set_axis_off()
        return fig
    x = np.arange(len(models))
    width = 0.38
    for i, attribute in enumerate(attributes):
        ax = axes[i // ncols][i % ncols]
        part = summary[summary["attribute"] == attribute].set_index("model").reindex(models)
        ax.bar(x - width / 2, part["normal"].to_numpy(float), width, label="normal scale",
               color="#4c72b0")
        ax.bar(x + width / 2, part["flipped"].to_numpy(float), width,
               label="flipped (100 - x)", color="#dd8452")
        ax.plot(x, part["combined"].to_numpy(float), "k.", markersize=9, label="combined")
        ax.set_ylim(0, 100)
        ax.set_xticks(x, [plain(m, 16) for m in models], rotation=30, ha="right", fontsize=8)
        ax.set_title(plain(attribute), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for j in range(len(attributes), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    axes[0][0].set_ylabel("self-report (0-100, normal scale)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Self-reports: normal wordings vs flipped twins", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def self_report_vs_behaviour(summary: pd.DataFrame, em_rates: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its combined self-report per attribute (`self_<attribute>`), how
    far its twins disagree (`abs_bias_<attribute>`: the summary's `pair_bias_abs`, the mean
    |normal - flipped| over twin pairs; a self-report is worth reading only where it is
    small) and its measured EM `rate` (from `em_rates`, columns model and rate; any further
    columns, such as CI bounds, are kept). A model measured on one side only still gets a
    row, with NaN on the other."""
    if "model" not in em_rates.columns or "rate" not in em_rates.columns:
        raise ValueError(f"em_rates needs columns model and rate, got {list(em_rates.columns)}")
    if summary.empty:
        wide = pd.DataFrame({"model": pd.Series(dtype=object)})
    else:
        order = [a for a in BEHAVIOUR_ATTRIBUTES if a in set(summary["attribute"])]
        order += [a for a in dict.fromkeys(summary["attribute"]) if a not in order]
        combined = summary.pivot(index="model", columns="attribute", values="combined")
        bias = summary.pivot(index="model", columns="attribute", values="pair_bias_abs")
        wide = pd.concat([combined[order].add_prefix("self_"),
                          bias[order].add_prefix("abs_bias_")], axis=1)
        wide = wide.reindex(list(dict.fromkeys(summary["model"]))).reset_index()
        wide.columns.name = None
    out = wide.merge(em_rates, on="model", how="outer", sort=False)
    return out[["model", "rate", *[c for c in out.columns if c not in ("model", "rate")]]]
