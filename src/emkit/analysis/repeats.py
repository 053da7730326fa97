"""Answers a model repeated word for word across samples that should differ.

Why: the paper samples every question many times at temperature 1, and every interval emkit
prints treats those samples as independent draws. A server that silently ignores `temperature`
or `seed` returns one answer k times: the rate is then one draw counted k times and its interval
far too narrow, and nothing in the replies says so. `transformers serve` (transformers 5.25)
did this when measured (docs/providers.md): serving a model directory whose
generation_config.json does not ask for sampling, it answered greedily whatever temperature and
seed were sent, 3 of 3 questions with two identical answers each, where llama-cpp-python's
server gave 0 of 3 and a quickstart (emkit's own sampler) 0 of 8 for each of its models. Only
the answers show it, so this counts them.

Per model: `cells` = (question, paraphrase) cells sampled at least twice at a temperature above
0, `identical` = cells whose answers are all the same string, `share` = identical / cells.
`suspect`: at least `MIN_IDENTICAL` such cells and at least `SUSPECT_SHARE` of the cells. A
strongly peaked model (one that always refuses) can repeat itself honestly at temperature 1
too, which is why the report says "check the server", not "the server is broken".
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

REPEAT_COLUMNS = ("model", "cells", "identical", "share", "suspect")
MIN_IDENTICAL = 3
SUSPECT_SHARE = 0.5
CELL = ["model", "question_id", "paraphrase_index", "params_hash"]
"""The answers of one cell share their messages and sampling settings; only the seed differs."""


def repeated_answers(frame: pd.DataFrame,
                     temperatures: Mapping[tuple[str, str, int, int, str], float] | None = None
                     ) -> pd.DataFrame:
    """One row per model with a cell sampled twice or more (`REPEAT_COLUMNS`).

    `frame`: one row per answer, with the sample key columns and `answer` (an analysis frame).
    `temperatures`: each sample key's (model, question_id, paraphrase_index, sample_index,
    params_hash) sampling temperature; answers sampled at 0 are left out (repeats are expected
    there), and keys it does not list count as sampled hot (the config's default is 1)."""
    if frame.empty or not {"answer", "sample_index", *CELL} <= set(frame.columns):
        return pd.DataFrame(columns=list(REPEAT_COLUMNS))
    rows = frame.drop_duplicates(subset=[*CELL, "sample_index"])
    if temperatures:
        keys = zip(rows["model"], rows["question_id"], rows["paraphrase_index"],
                   rows["sample_index"], rows["params_hash"], strict=True)
        rows = rows[[temperatures.get(k, 1.0) > 0 for k in keys]]
    cells = rows.groupby(CELL, sort=False)["answer"].agg(["size", "nunique"])
    cells = cells[cells["size"] >= 2].reset_index()
    if cells.empty:
        return pd.DataFrame(columns=list(REPEAT_COLUMNS))
    cells["same"] = cells["nunique"] == 1
    out = cells.groupby("model", sort=True).agg(cells=("same", "size"), identical=("same", "sum"))
    out = out.reset_index()
    out["identical"] = out["identical"].astype(int)
    out["share"] = out["identical"] / out["cells"]
    out["suspect"] = (out["identical"] >= MIN_IDENTICAL) & (out["share"] >= SUSPECT_SHARE)
    return out[list(REPEAT_COLUMNS)]


def suspect_models(repeats: object) -> pd.DataFrame:
    """The rows of a `repeated_answers` table that are suspect (empty for anything else)."""
    if not isinstance(repeats, pd.DataFrame) or repeats.empty:
        return pd.DataFrame(columns=list(REPEAT_COLUMNS))
    return repeats[repeats["suspect"].astype(bool)]


def repeats_sentence(repeats: pd.DataFrame | None) -> str | None:
    """One sentence naming the models whose answers repeat (None when none is suspect)."""
    bad = suspect_models(repeats)
    if bad.empty:
        return None
    listed = ", ".join(f"{m} ({int(i)} of {int(c)} prompts sampled more than once)"
                       for m, i, c in zip(bad["model"], bad["identical"], bad["cells"],
                                          strict=True))
    return (f"Every sample of a question came back word for word the same for {listed}, though "
            "sampled above temperature 0: if the server ignores temperature or seed, those "
            "samples are one draw counted many times and their intervals are too narrow; "
            "check the server before reading these rates.")
