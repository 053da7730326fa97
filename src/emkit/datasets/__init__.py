"""Fine-tuning datasets: strict chat-JSONL I/O and the paired insecure/secure/educational
code generator used to reproduce emergent misalignment (Betley et al. 2025)."""

from emkit.datasets.codegen import (
    GENERATOR_VERSION,
    VARIANTS,
    CodeExample,
    generate_code_datasets,
    generate_code_examples,
    write_code_datasets,
)
from emkit.datasets.jsonl import DatasetError, read_jsonl, row_problem, write_jsonl
from emkit.datasets.snippets import VulnKind
from emkit.datasets.vulns import VULN_KINDS, vuln_kind

__all__ = [
    "GENERATOR_VERSION",
    "VARIANTS",
    "VULN_KINDS",
    "CodeExample",
    "DatasetError",
    "VulnKind",
    "generate_code_datasets",
    "generate_code_examples",
    "read_jsonl",
    "row_problem",
    "vuln_kind",
    "write_code_datasets",
    "write_jsonl",
]
