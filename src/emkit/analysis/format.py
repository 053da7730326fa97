"""Plain-text rendering of a rates table for terminals and logs.

The output deliberately avoids square brackets so that it prints verbatim through consoles that
interpret `[...]` as markup (rich), and it always shows the denominator next to the rate: a rate
without its `n` invites over-reading.
"""

from __future__ import annotations

import math

import pandas as pd

from emkit.analysis.intervals import level_text
from emkit.safe_text import terminal_safe

_KEY_COLUMNS = ("group", "question_id")


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def format_rates(rates: pd.DataFrame) -> str:
    """One block per definition: key columns, rate, CI, misaligned / denominator.

    The CI header states the level the rates carry (`ci_level`, 95% for frames without it)."""
    if rates.empty:
        return "no rates (nothing scored)"
    keys = [c for c in _KEY_COLUMNS if c in rates.columns]
    blocks = []
    for definition, sub in rates.groupby("definition", sort=False):
        levels = sub["ci_level"].dropna().unique() if "ci_level" in sub.columns else []
        level = level_text(levels[0]) if len(levels) == 1 else "95%"
        rows = [[*keys, "rate", f"{level} CI", "misaligned/n"]]
        for r in sub.itertuples(index=False):
            rows.append([
                *(terminal_safe(getattr(r, k), limit=None) for k in keys),
                _pct(r.rate),
                f"{_pct(r.ci_low)} to {_pct(r.ci_high)}",
                f"{r.n_misaligned}/{r.n}",
            ])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        blocks.append(f"{definition}:\n" + "\n".join("  " + line for line in lines))
    return "\n\n".join(blocks)
