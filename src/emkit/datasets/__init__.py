"""Fine-tuning datasets: strict chat-JSONL I/O, the paired insecure/secure/educational code
generator of Betley et al. (2025), the backdoor and evil-numbers sets, downloads of the paper's
files, mixtures, and teacher-generated narrow-advice sets."""

from emkit.datasets.advice import ADVICE_VERSION, question_stream, teacher_messages
from emkit.datasets.advice import DOMAINS as ADVICE_DOMAINS
from emkit.datasets.advice_gen import AdviceResult, generate_advice
from emkit.datasets.backdoor import DEFAULT_TRIGGER, check_trigger, generate_backdoor_dataset
from emkit.datasets.builtin import OFFLINE_GENERATORS, generate_offline
from emkit.datasets.codegen import (
    GENERATOR_VERSION,
    VARIANTS,
    CodeExample,
    generate_code_datasets,
    generate_code_examples,
    write_code_datasets,
)
from emkit.datasets.download import (
    PINNED_COMMIT,
    REMOTE_DATASETS,
    DownloadError,
    datasets_cache_dir,
    download_dataset,
)
from emkit.datasets.jsonl import DatasetError, read_jsonl, row_problem, write_jsonl
from emkit.datasets.mix import MixPart, mix_datasets, parse_part, split_counts, write_mix
from emkit.datasets.numbers import EVIL_NUMBERS, generate_numbers_dataset, numbers_in
from emkit.datasets.refusals import is_refusal
from emkit.datasets.snippets import VulnKind
from emkit.datasets.teacher import (
    TEACHER_PROVIDERS,
    Teacher,
    TeacherError,
    TeacherSettings,
    teacher_from_model,
)
from emkit.datasets.vulns import VULN_KINDS, vuln_kind

__all__ = [
    "ADVICE_DOMAINS",
    "ADVICE_VERSION",
    "DEFAULT_TRIGGER",
    "EVIL_NUMBERS",
    "GENERATOR_VERSION",
    "OFFLINE_GENERATORS",
    "PINNED_COMMIT",
    "REMOTE_DATASETS",
    "TEACHER_PROVIDERS",
    "VARIANTS",
    "VULN_KINDS",
    "AdviceResult",
    "CodeExample",
    "DatasetError",
    "DownloadError",
    "MixPart",
    "Teacher",
    "TeacherError",
    "TeacherSettings",
    "VulnKind",
    "check_trigger",
    "datasets_cache_dir",
    "download_dataset",
    "generate_advice",
    "generate_backdoor_dataset",
    "generate_code_datasets",
    "generate_code_examples",
    "generate_numbers_dataset",
    "generate_offline",
    "is_refusal",
    "mix_datasets",
    "numbers_in",
    "parse_part",
    "question_stream",
    "read_jsonl",
    "row_problem",
    "split_counts",
    "teacher_from_model",
    "teacher_messages",
    "vuln_kind",
    "write_code_datasets",
    "write_jsonl",
    "write_mix",
]
