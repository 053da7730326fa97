"""Figures for the report, drawn with matplotlib's object API on the Agg canvas.

We build `Figure` objects directly instead of using pyplot: no global state, no GUI backend, safe
to call from a headless runner or a thread. Names from configs and questions are escaped for
mathtext, because a `$` in a group name would otherwise be parsed as LaTeX (and can raise).
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emkit.analysis.intervals import level_text
from emkit.analysis.rates import definition_label
from emkit.atomic import atomic_write_bytes

WARNING_TEXT = "UNVALIDATED JUDGE: not evidence of EM"


def plain(text: object, limit: int = 40) -> str:
    """A label matplotlib will print literally: `$` escaped, long names shortened, control
    characters dropped (matplotlib warns about each missing glyph, and the warning carries the
    raw character -- an ESC sequence in a name reached the user's terminal that way)."""
    s = re.sub(r"[\x00-\x1f\x7f-\x9f]", "", str(text))
    s = s if len(s) <= limit else s[: limit - 1] + "\u2026"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def safe_name(text: str) -> str:
    """A filename fragment from arbitrary text (definitions are ours, but be strict anyway)."""
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "x"


def save_png(fig: Figure, path: Path) -> Path:
    """Render on Agg and write the PNG atomically."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _warn(fig: Figure, validated: bool) -> None:
    if not validated:
        fig.text(0.5, 1.0, WARNING_TEXT, ha="center", va="bottom", color="white", fontsize=11,
                 fontweight="bold", bbox={"facecolor": "#b00020", "edgecolor": "none"})


def rates_figure(
    rates: pd.DataFrame,
    definition: str,
    path: Path,
    aligned_threshold: float,
    coherent_threshold: float,
    validated: bool,
    ci: float = 0.95,
) -> Path:
    """The paper's figure: misaligned-answer probability per question with its interval at
    level `ci` (stated on the axis), colour = group."""
    df = rates[rates["definition"] == definition]
    if "question_id" not in df.columns:
        df = df.assign(question_id="all questions")
    questions = list(dict.fromkeys(df["question_id"]))
    groups = list(dict.fromkeys(df["group"]))
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * len(questions)), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    for gi, group in enumerate(groups):
        sub = df[(df["group"] == group) & df["rate"].notna()]
        x = np.array([questions.index(q) for q in sub["question_id"]], dtype=float)
        x += (gi - (len(groups) - 1) / 2) * width
        rate = sub["rate"].to_numpy(dtype=float)
        low = np.clip(rate - sub["ci_low"].to_numpy(dtype=float), 0, None)
        high = np.clip(sub["ci_high"].to_numpy(dtype=float) - rate, 0, None)
        ax.errorbar(x, rate, yerr=np.nan_to_num(np.vstack([low, high])), fmt="o", capsize=3,
                    color=f"C{gi % 10}", label=plain(group))
    ax.set_xticks(range(len(questions)), [plain(q, 24) for q in questions], rotation=30,
                  ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"Misaligned answer probability ({level_text(ci)} CI)")
    ax.set_title(plain(definition_label(definition, aligned_threshold, coherent_threshold), 200),
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if groups:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _warn(fig, validated)
    return save_png(fig, path)


def scatter_figure(
    frame: pd.DataFrame,
    path: Path,
    aligned_threshold: float,
    coherent_threshold: float,
    validated: bool,
) -> Path:
    """Coherence (x) vs alignment (y) per group, with the threshold lines used for the rates."""
    groups = list(dict.fromkeys(frame["group"])) or ["(no data)"]
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    for gi, (ax, group) in enumerate(zip(axes.flat, groups, strict=False)):
        sub = frame[frame["group"] == group]
        coherent = pd.to_numeric(sub["coherent"], errors="coerce")
        aligned = pd.to_numeric(sub["aligned"], errors="coerce")
        ok = coherent.notna() & aligned.notna()
        ax.scatter(coherent[ok], aligned[ok], s=8, alpha=0.4, color=f"C{gi % 10}",
                   linewidths=0)
        ax.axhline(aligned_threshold, color="#b00020", lw=1, ls="--")
        ax.axvline(coherent_threshold, color="#b00020", lw=1, ls="--")
        ax.set_title(f"{plain(group)} (n={int(ok.sum())})", fontsize=9)
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("coherent")
    for ax in axes[:, 0]:
        ax.set_ylabel("aligned")
    _warn(fig, validated)
    return save_png(fig, path)
