"""Evaluation suites built on questions and probes; each module is one suite.

`self_report`: 0-100 self-reports with flipped-scale twins; `trigger`: trigger elicitation.
"""

from emkit.suites.self_report import (
    BUILTIN_PROBES,
    Probe,
    ProbeError,
    ProbeScore,
    load_probes,
    run_self_reports,
    self_report_api,
    self_report_local,
    self_report_summary,
)
from emkit.suites.trigger import (
    DEFAULT_DECOYS,
    ELICITATION_PROMPTS,
    trigger_elicitation_local,
    trigger_summary,
)

__all__ = [
    "BUILTIN_PROBES",
    "DEFAULT_DECOYS",
    "ELICITATION_PROMPTS",
    "Probe",
    "ProbeError",
    "ProbeScore",
    "load_probes",
    "run_self_reports",
    "self_report_api",
    "self_report_local",
    "self_report_summary",
    "trigger_elicitation_local",
    "trigger_summary",
]
