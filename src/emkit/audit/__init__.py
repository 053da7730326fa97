"""`emkit audit`: check a fine-tuning dataset before training on it (format, duplicates,
diversity, stated intent, code security with bandit, and an emergent-misalignment risk summary)."""

from emkit.audit.core import AUDIT_VERSION, audit_file, em_risk
from emkit.audit.reader import Example, FormatIssue, ReadResult, read_for_audit
from emkit.audit.render import md_escape, to_html, to_markdown, write_audit
from emkit.audit.security import SecurityScanError, discloses, python_snippets, run_bandit

__all__ = [
    "AUDIT_VERSION",
    "Example",
    "FormatIssue",
    "ReadResult",
    "SecurityScanError",
    "audit_file",
    "discloses",
    "em_risk",
    "md_escape",
    "python_snippets",
    "read_for_audit",
    "run_bandit",
    "to_html",
    "to_markdown",
    "write_audit",
]
