"""Which judge made the judgments stored under a judge name, so one name never means two judges.

Why: judgments are keyed by judge name and the first write wins, and a run can be resumed
after an upgrade. `distilled/default` is a file that ships with emkit: when it changes, a
resumed run would judge its new samples with the new judge and keep the old judge's verdicts
for the rest, all under one name, and every rate would silently mix the two. So the first
judging under a name records the judge's fingerprint (a digest of its files), and judging
more samples under that name with a different fingerprint is refused. The record is the
`judge` kind of the run store's identity table (`emkit.store.identity`), beside the models,
messages and judge prompts that made the run's work.
"""

from __future__ import annotations

from pathlib import Path

from emkit.store.identity import changes, claim, recorded

KIND = "judge"


class JudgeChangedError(ValueError):
    """The judge behind a name is not the one that made the stored judgments."""


def claim_judge_name(db_path: Path, name: str, fingerprint: str) -> None:
    """Record `fingerprint` for `name` on first use; refuse a different one later."""
    if found := changes(db_path, KIND, {name: fingerprint}):
        raise JudgeChangedError(
            f"{db_path}: the judgments stored under {name!r} were made by another version of "
            f"that judge (fingerprint {found[0].old}, now {fingerprint}); judging more samples "
            f"would mix two judges under one name. Start a new run, or judge this one with "
            f"the new judge under a new name: {_new_name_hint(name)}.")
    claim(db_path, KIND, {name: fingerprint}, reuse_changed=False)


def _new_name_hint(name: str) -> str:
    """How to give a changed judge a name of its own: a distilled judge by its directory; an
    API judge's verdicts change with its endpoint settings (judge_mode, ...), not its name."""
    if name.startswith("distilled/"):
        return "copy it to a directory and pass --judge distilled/<dir>"
    return ("an API judge is named by its model string, so change its endpoint settings "
            "(judge_mode, base_url) back, or list the endpoint as another model under "
            "api.models with its own name")


def judge_fingerprints(db_path: Path) -> dict[str, str]:
    """name -> fingerprint of every judge recorded in the run (empty when none is)."""
    return recorded(db_path, KIND)
