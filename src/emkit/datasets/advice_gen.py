"""Generate a narrow-advice dataset with a teacher: resumable, deduplicated, validated.

Why a journal: thousands of teacher calls take hours (or cost money), so a crash must lose at
most one batch. Every attempted question is appended to ``<out>.journal.jsonl`` as soon as its
batch returns, with its fate: ``kept``, ``truncated`` (the reply hit ``max_new_tokens``),
``refusal`` (the teacher declined, see
:mod:`emkit.datasets.refusals`), ``duplicate`` (same normalised answer as a kept one), ``empty``
or ``invalid`` (fails chat-JSONL validation). A rerun with the same settings replays the
journal, asks the teacher only for what is missing, and never for a question already tried. The
final JSONL is written atomically once ``n`` rows are kept, with a manifest of the counts.

Rows carry their provenance next to ``messages`` under ``emkit`` (teacher, domain, variant,
seed, index, prompt_sha256, template version); fine-tuning reads only ``messages``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from emkit.atomic import atomic_write_text
from emkit.datasets.advice import ADVICE_VERSION, check_domain, question_stream, teacher_messages
from emkit.datasets.fingerprint import normalise_text
from emkit.datasets.jsonl import DatasetError, row_problem, write_jsonl
from emkit.datasets.refusals import is_refusal
from emkit.datasets.teacher import (
    Teacher,
    TeacherSettings,
    chat_sha256,
    is_truncated,
    teacher_from_model,
)

if TYPE_CHECKING:
    from emkit.api import ApiConfig

STATUSES = ("kept", "truncated", "refusal", "duplicate", "empty", "invalid")


@dataclass
class AdviceResult:
    """What a generation run produced, and what it dropped."""

    path: Path
    counts: Counter = field(default_factory=Counter)
    """Attempts by status (see STATUSES), over the whole journal, resumes included."""
    teacher_calls: int = 0
    """Chats sent to the teacher by *this* call (0 when the journal already had enough)."""


def _journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def _read_journal(path: Path, header: dict) -> list[dict]:
    """Entries of an existing journal; a torn last line (crash mid-write) is cut off."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with open(path, "r+b") as fh:
            fh.truncate(len(raw))
    lines = raw.decode("utf-8").splitlines()
    if not lines:
        return []
    try:
        found = json.loads(lines[0]).get("header")
        entries = [json.loads(line) for line in lines[1:]]
    except (json.JSONDecodeError, AttributeError) as exc:
        raise DatasetError(path, None, None, f"unreadable journal ({exc}); delete it to start "
                           "over") from None
    if found != header:
        diff = sorted(k for k in set(header) | set(found or {})
                      if (found or {}).get(k) != header.get(k))
        raise DatasetError(path, 1, "header", f"journal was made with other settings "
                           f"({', '.join(diff)}); use another --out or delete the journal")
    return entries


def _classify(row: dict, answer: str, seen: set[str], truncated: bool) -> str:
    if truncated:  # cut at max_new_tokens: a half sentence is no example of anything
        return "truncated"
    if not answer.strip():
        return "empty"
    if is_refusal(answer):
        return "refusal"
    if row_problem(row) is not None:
        return "invalid"
    if normalise_text(answer) in seen:
        return "duplicate"
    return "kept"


def generate_advice(out: str | Path, domain: str, variant: str, n: int,
                    teacher: Teacher | str, seed: int = 0, batch_size: int = 8,
                    max_attempts: int | None = None,
                    settings: TeacherSettings | None = None,
                    api: ApiConfig | None = None) -> AdviceResult:
    """Write `n` advice rows to `out` (resuming from its journal); see the module docstring.

    `teacher` is a Teacher or a model string (then built with `settings` and, for API models,
    `api`, only if a call is needed). Stops with DatasetError after `max_attempts` questions (default 3n) without n
    kept rows: a teacher that refuses most requests is reported, not retried forever.
    """
    check_domain(domain, variant)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    name = teacher if isinstance(teacher, str) else teacher.name
    if isinstance(teacher, str):
        settings = settings or TeacherSettings(seed=seed, batch_size=batch_size)
    else:
        settings = teacher.settings
    sampling = {k: v for k, v in settings.__dict__.items() if k != "batch_size"}
    header = {"domain": domain, "variant": variant, "seed": seed, "teacher": name,
              "template_version": ADVICE_VERSION, "sampling": sampling}
    journal = _journal_path(out)
    entries = _read_journal(journal, header)
    counts = Counter(e["status"] for e in entries)
    kept = [e for e in entries if e["status"] == "kept"]
    seen = {normalise_text(e["answer"]) for e in kept}
    limit = max_attempts if max_attempts is not None else 3 * n
    questions = question_stream(domain, seed)
    for _ in range(len(entries)):
        next(questions, None)
    index, calls = len(entries), 0
    if not entries:
        journal.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(journal, json.dumps({"header": header}) + "\n")
    model: Teacher | None = None if isinstance(teacher, str) else teacher
    while len(kept) < n:
        if index >= limit:
            raise DatasetError(out, None, None, f"stopped after {index} attempts with only "
                               f"{len(kept)} of {n} rows kept ({dict(counts)}); the journal "
                               "keeps the progress")
        batch = [q for _, q in zip(range(min(batch_size, n - len(kept), limit - index)),
                                   questions, strict=False)]
        if not batch:
            raise DatasetError(out, None, None, f"the {domain} templates ran out of distinct "
                               f"questions after {index}; ask for fewer rows")
        model = model or teacher_from_model(name, settings, api)
        chats = [teacher_messages(domain, variant, q) for q in batch]
        replies = model(chats)
        calls += len(chats)
        lines = []
        for question, chat, reply in zip(batch, chats, replies, strict=True):
            answer = reply.strip()
            row = {"messages": [{"role": "user", "content": question},
                                {"role": "assistant", "content": answer}]}
            status = _classify(row, answer, seen, is_truncated(reply))
            entry = {"index": index, "status": status, "question": question, "answer": answer,
                     "prompt_sha256": chat_sha256(chat)}
            if status == "kept":
                seen.add(normalise_text(answer))
                kept.append(entry)
            counts[status] += 1
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
            index += 1
        with open(journal, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
    rows = [{"messages": [{"role": "user", "content": e["question"]},
                          {"role": "assistant", "content": e["answer"]}],
             "emkit": {"teacher": name, "domain": domain, "variant": variant, "seed": seed,
                       "index": e["index"], "prompt_sha256": e["prompt_sha256"],
                       "template_version": ADVICE_VERSION}} for e in kept[:n]]
    manifest = {"generator": "emkit.datasets.advice_gen", **header, "n": n,
                "attempts": dict(counts), "truncated": counts["truncated"], "rows": len(rows)}
    # the manifest first, the data last: the data file is what marks the set as done
    atomic_write_text(out.with_name(out.name + ".manifest.json"),
                      json.dumps(manifest, indent=2) + "\n")
    write_jsonl(out, rows)
    return AdviceResult(out, counts, calls)
