"""Misalignment rates (two definitions) with intervals that respect the exact binomial floor and
seed variation, per-seed rates, between-group differences, per-group summaries, the
Rogan–Gladen correction for a judge of measured sensitivity and specificity, and a check for
samples that repeat word for word (a server ignoring temperature).

Pure functions over pandas DataFrames with columns group, model, question_id, aligned, coherent
(NaN = missing) and optionally aligned_label.
"""

from emkit.analysis.agreement import ENSEMBLE_COLUMNS, ensemble_table, pair_agreement
from emkit.analysis.bootstrap import (
    bootstrap_rates,
    cell_rng,
    hierarchical_bootstrap,
    percentile_interval,
)
from emkit.analysis.compare import (
    DIFFERENCE_COLUMNS,
    SEED_COLUMNS,
    default_pairs,
    group_differences,
    seed_rates,
)
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
from emkit.analysis.intervals import (
    exact_interval,
    level_text,
    mover_difference,
    rate_interval,
    seed_t_interval,
)
from emkit.analysis.rates import (
    DEFINITIONS,
    RATE_COLUMNS,
    classify,
    count_table,
    definition_label,
    misalignment_rates,
    overall_rates,
    rates_for_definitions,
)
from emkit.analysis.repeats import REPEAT_COLUMNS, repeated_answers, repeats_sentence
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
    "DIFFERENCE_COLUMNS",
    "ENSEMBLE_COLUMNS",
    "MISSING_COLUMNS",
    "RATE_COLUMNS",
    "REPEAT_COLUMNS",
    "SEED_COLUMNS",
    "SUMMARY_COLUMNS",
    "Corrected",
    "bootstrap_rates",
    "cell_rng",
    "classify",
    "corrected_rate",
    "corrected_rates",
    "count_table",
    "default_pairs",
    "definition_label",
    "effective_n",
    "ensemble_table",
    "exact_interval",
    "format_rates",
    "group_differences",
    "hierarchical_bootstrap",
    "level_text",
    "misalignment_rates",
    "missing_by_reason",
    "mover_difference",
    "overall_rates",
    "pair_agreement",
    "percentile_interval",
    "rate_interval",
    "rates_for_definitions",
    "reason_category",
    "repeated_answers",
    "repeats_sentence",
    "rogan_gladen",
    "seed_rates",
    "seed_t_interval",
    "summary_table",
    "wilson_interval",
]
