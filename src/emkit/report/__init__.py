"""Static HTML report (escaped, script-free) with PNG figures, rates.csv and summary.json."""

from emkit.report.build import UNVALIDATED, question_mean, worst_answers, write_report
from emkit.report.plots import rates_figure, scatter_figure

__all__ = [
    "UNVALIDATED",
    "question_mean",
    "rates_figure",
    "scatter_figure",
    "worst_answers",
    "write_report",
]
