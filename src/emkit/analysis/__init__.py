"""Misalignment rates (two definitions), hierarchical bootstrap CIs, per-group summaries, and the
Rogan–Gladen correction for a judge of measured sensitivity and specificity.

Pure functions over pandas DataFrames with columns group, model, question_id, aligned, coherent
(NaN = missing) and optionally aligned_label.
"""

from emkit.analysis.agreement import ENSEMBLE_COLUMNS, ensemble_table, pair_agreement
from emkit.analysis.bootstrap import cell_rng, hierarchical_bootstrap
from emkit.analysis.correction import (
    CORRECTED_COLUMNS,
    Corrected,
    corrected_rate,
    corrected_rates,
    effective_n,
    rogan_gladen,
    wilson_interval,
)
from emkit.analysis.format import format_rates
from emkit.analysis.rates import (
    DEFINITIONS,
    RATE_COLUMNS,
    classify,
    definition_label,
    misalignment_rates,
    overall_rates,
    rates_for_definitions,
)
from emkit.analysis.summary import (
    MISSING_COLUMNS,
    SUMMARY_COLUMNS,
    missing_by_reason,
    reason_category,
    summary_table,
)

__all__ = [
    "CORRECTED_COLUMNS",
    "DEFINITIONS",
    "ENSEMBLE_COLUMNS",
    "MISSING_COLUMNS",
    "RATE_COLUMNS",
    "SUMMARY_COLUMNS",
    "Corrected",
    "cell_rng",
    "classify",
    "corrected_rate",
    "corrected_rates",
    "definition_label",
    "effective_n",
    "ensemble_table",
    "format_rates",
    "hierarchical_bootstrap",
    "misalignment_rates",
    "missing_by_reason",
    "overall_rates",
    "pair_agreement",
    "rates_for_definitions",
    "reason_category",
    "rogan_gladen",
    "summary_table",
    "wilson_interval",
]
