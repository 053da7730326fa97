"""Retrain emkit's shipped offline judge (`distilled/default`) on real EM answers.

Usage:
  # 1. tune: choose the encoder settings on the validation families, then tune the cross-fit
  #    encoders on train + validation. Minutes on a GPU, hours on 2 CPU cores.
  python scripts/train_default_judge.py tune --data real-em-answers.jsonl --out build/tune
  # 2. assemble (here, CPU): heads on the int8 outputs, the test families scored once,
  #    judge.json + encoder/ written to --out.
  python scripts/train_default_judge.py assemble --data real-em-answers.jsonl \
      --tuned build/tune --out src/emkit/data/judges/default

  # 3. lofo (here, CPU, minutes): the head recipes compared out of family, each family the
  #    encoder never trained on held out in turn (`leave_one_family_out`); the encoder's own
  #    families are read from the judge.json beside it, or given with --trained FAMILY ...
  python scripts/train_default_judge.py lofo --data real-em-answers.jsonl \
      --encoder src/emkit/data/judges/default/encoder --out build/lofo.json

  # 4. crossfit + crossfit-assemble (CPU: about an hour, then 3 min): the encoder continued on
  #    the other families, one encoder per held-out family, heads on out-of-fold outputs
  #    (docs/judge.md, "Family cross-fit"; tried, not shipped).
  python scripts/train_default_judge.py crossfit --data real-em-answers.jsonl \
      --start src/emkit/data/judges/default/encoder --work build/crossfit [--hand-written]
  python scripts/train_default_judge.py crossfit-assemble --data real-em-answers.jsonl \
      --work build/crossfit --figures docs/judge_crossfit.json [--lexical] [--write --out DIR]

  # 5. encoders (CPU: about 25 min, mostly all-mpnet-base-v2 reading 6,486 answers): frozen
  #    MiniLM / mpnet heads and the shipped encoder stacked with each, out of family
  #    (docs/judge.md, "A larger frozen encoder and ensembles"); needs `pip install 'emkit[mpnet]'`.
  python scripts/train_default_judge.py encoders --data real-em-answers.jsonl \
      --encoder src/emkit/data/judges/default/encoder --work build/encoders \
      --out docs/judge_encoders.json

  # 6. lexical (CPU: about 12 min, mostly the TF-IDF ridges): the shipped encoder stacked with
  #    a ridge over TF-IDF word 1-2-grams, out of family (docs/judge.md, "A lexical column");
  #    --write DIR builds the `tuned+lexical` judge, the default since 2026-12-06 (write it
  #    elsewhere and copy judge.json over: its encoder/ is the one it read).
  python scripts/train_default_judge.py lexical --data real-em-answers.jsonl \
      --encoder src/emkit/data/judges/default/encoder --work build/lexical \
      --out docs/judge_lexical.json [--compare-encoder src/emkit/data/judges/mpnet/encoder] \
      [--write build/default --machine "CPU name"]

The split, the candidates and the selection rule are in `emkit.judge.train_default` and below;
docs/judge.md has the figures of the shipped judge. `--limit N` shrinks every split (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emkit.judge.encoder_tune import TuneSettings

CANDIDATES = {
    # name: settings (epochs = the most tried; the best epoch on validation is kept)
    "L4-256": TuneSettings(layers=4, max_length=256, epochs=8),
    "L4-512": TuneSettings(layers=4, max_length=512, epochs=8),
    "L4-512-r16": TuneSettings(layers=4, max_length=512, epochs=8, rank=16, alpha=32),
    "L4-512-lr1e-3": TuneSettings(layers=4, max_length=512, epochs=8, learning_rate=1e-3),
    "L6-512": TuneSettings(layers=6, max_length=512, epochs=8),
}
ELIGIBLE = ("L4-256", "L4-512", "L4-512-r16", "L4-512-lr1e-3")
"""Six blocks cost a third more per answer and missed 100 judgments/s on 2 AVX2 cores last
time (docs/judge.md): measured for the record, not eligible for the shipped judge."""

LARGER = {
    # all-mpnet-base-v2 tuned with the shipped recipe (rank 8 on every projection, lr 5e-4,
    # 512 pieces), under bfloat16 autocast: on 2 AMX cores an epoch is minutes, not hours.
    # Not eligible for the default (five times the work per answer of MiniLM's 4 blocks).
    "mpnet-512": TuneSettings(base="mpnet", layers=12, max_length=512, epochs=3,
                              precision="bfloat16"),
    # the time-boxed fallback of 2026-12-06 (docs/judge.md): 256 pieces per window
    "mpnet-256": TuneSettings(base="mpnet", layers=12, max_length=256, epochs=2,
                              precision="bfloat16"),
}


def read_rows(path: Path, limit: int | None) -> list:
    """The real-answer rows (validated by `load_reference`); `limit`: the first N per split."""
    from emkit.judge.reference import load_reference
    from emkit.judge.train_default import split_rows

    rows = load_reference(path)
    if limit:
        rows = [r for part in split_rows(rows).values() for r in part[:limit]]
    return rows


def tune(args: argparse.Namespace) -> None:
    from emkit.judge.calibration import load_calibration
    from emkit.judge.distill import train_crossfit
    from emkit.judge.train_default import select, split_rows, training_set

    t0 = time.time()
    parts = split_rows(read_rows(args.data, args.limit))
    items = load_calibration(split="train")[: args.limit or None]
    candidates = {n: s for n, s in CANDIDATES.items() if not args.only or n in args.only}
    if args.limit:
        candidates = {n: TuneSettings(**{**s.__dict__, "epochs": 2})
                      for n, s in candidates.items()}
    chosen = select(training_set(parts["train"], items), parts["validation"], candidates,
                    device=args.device, eligible=ELIGIBLE, log_fn=print)
    settings = TuneSettings(**chosen["settings"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "selection.json").write_text(json.dumps(chosen, indent=1) + "\n")
    print(f"chosen {chosen['chosen']} at epoch {chosen['chosen_epoch']} "
          f"({time.time() - t0:.0f} s so far)", flush=True)
    final = training_set(parts["train"] + parts["validation"], items)
    train_crossfit(final.questions, final.answers, final.targets, final.groups, settings,
                   out_dir=args.out, device=args.device)
    chosen["seconds"] = round(time.time() - t0, 1)
    chosen["device"] = _device_name(args.device)
    (args.out / "selection.json").write_text(json.dumps(chosen, indent=1) + "\n")
    print(f"tuned in {chosen['seconds']} s on {chosen['device']}", flush=True)


def tune_epochs(args: argparse.Namespace) -> None:
    """One candidate (`LARGER` or `CANDIDATES`) tuned on the train split (+ the calibration
    train split) as `tune` does, scored on the validation families after every epoch and saved
    after every epoch (`--out/<name>/epoch-N`); `--out/selection.json` names the best epoch.
    The encoder is then judged out of family with `lofo --encoder --out/<name>/epoch-N`."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.real_split import subject_family
    from emkit.judge.train_default import select, split_rows, training_set

    t0 = time.time()
    settings = {**CANDIDATES, **LARGER}[args.name]
    if args.epochs:
        settings = TuneSettings(**{**settings.__dict__, "epochs": args.epochs})
    parts = split_rows(read_rows(args.data, args.limit))
    items = load_calibration(split="train")[: args.limit or None]
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = select(training_set(parts["train"], items), parts["validation"],
                    {args.name: settings}, device=args.device, log_fn=print,
                    save_dir=args.out)
    chosen["seconds"] = round(time.time() - t0, 1)
    chosen["device"] = _device_name(args.device)
    chosen["train_families"] = sorted({subject_family(r.subject) for r in parts["train"]})
    (args.out / "selection.json").write_text(json.dumps(chosen, indent=1) + "\n")
    print(f"best epoch {chosen['chosen_epoch']} of {args.name}: "
          f"{args.out / args.name / ('epoch-' + str(chosen['chosen_epoch']))} "
          f"({chosen['seconds']:.0f} s on {chosen['device']})", flush=True)


def tune_one(args: argparse.Namespace) -> None:
    """One encoder with the chosen settings on the train split (+ the calibration train split),
    saved as soon as it is tuned; its heads are then fitted here on the validation families."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.distill import encoder_kinds
    from emkit.judge.encoder_tune import kind_classes, tune_encoder
    from emkit.judge.train_default import split_rows, training_set

    t0 = time.time()
    settings = TuneSettings(**json.loads(args.settings.read_text())["settings"])
    parts = split_rows(read_rows(args.data, args.limit))
    data = training_set(parts["train"], load_calibration(split="train")[: args.limit or None])
    kinds = encoder_kinds(data.targets)
    enc = tune_encoder(data.questions, data.answers,
                       {m: s for m, (s, _) in data.targets.items()}, kinds, settings,
                       classes=kind_classes(kinds), device=args.device, progress=True)
    enc.save(args.out)
    print(f"tuned in {time.time() - t0:.0f} s on {_device_name(args.device)}", flush=True)


def assemble(args: argparse.Namespace) -> None:
    """Heads on the validation families, the calibration held-out split and the test
    families scored once, the judge written to --out."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.distill import DEFAULT_JUDGE, evaluate_heldout
    from emkit.judge.encoder_tune import TunedEncoder
    from emkit.judge.real_split import subject_family
    from emkit.judge.reference import file_sha256, load_reference, reference_agreement
    from emkit.judge.train_default import fit_default_heads, split_rows

    t0 = time.time()
    parts = split_rows(load_reference(args.data))
    items = load_calibration(split="train")
    selection = json.loads((args.tuned / "selection.json").read_text())
    sha = file_sha256(args.data)
    meta = {
        "trained_on": (f"{len(parts['train'])} real EM answers (train families) + {len(items)} "
                       f"hand-written (calibration train split) for the encoder; "
                       f"{len(parts['validation'])} real answers (validation families) for "
                       f"the heads"),
        "teacher": "GPT-4o's published verdicts (real answers), hand labels (calibration set)",
        "n_train": len(parts["train"]) + len(items) + len(parts["validation"]),
        "real_answers_data": {"file": args.data.name, "sha256": sha,
                              "families": {k: sorted({subject_family(r.subject) for r in v})
                                           for k, v in parts.items()}},
        "real_answers_splits": {k: sorted({r.subject for r in v}) for k, v in parts.items()},
        "selection": {k: selection[k] for k in ("chosen", "chosen_epoch",
                                                  "chosen_validation", "device", "seconds")
                      if k in selection},
        "encoder_tuned": args.encoder_note,
        "own_outputs": ["coherent"],
    }
    if args.test_note:
        meta["test_history"] = args.test_note
    judge = fit_default_heads(TunedEncoder.load(args.encoder), parts["validation"], items,
                              DEFAULT_JUDGE, meta)
    print(f"heads fitted ({time.time() - t0:.0f} s)", flush=True)
    heldout = evaluate_heldout(judge)
    print(f"calibration held-out: AUC {heldout.get('roc_auc'):.3f}", flush=True)
    test = reference_agreement(judge, parts["test"], progress=True)
    judge.meta["real_answers"] = test | {"data": {"source": "real-answers", "sha256": sha,
                                                 "split": "test"}}
    judge.save(args.out)
    print(json.dumps({k: test[k] for k in ("n", "n_misaligned", "n_aligned", "auc", "recall",
                                           "false_positive_rate")}, indent=1), flush=True)
    print(f"written {args.out} ({time.time() - t0:.0f} s)", flush=True)


def unseen_by(data: Path, encoder: Path, trained: list[str] | None) -> list:
    """The rows of `data` from families `encoder` never trained on (`--trained`, else its
    judge.json); a bad name or a missing record is a one-line error."""
    from emkit.judge.reference import load_reference
    from emkit.judge.train_default import trained_families, unseen_rows

    try:
        return unseen_rows(load_reference(data), trained or trained_families(encoder),
                           named=bool(trained))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def seen_by(data: Path, unseen: list) -> list:
    """The rows of `data` from every family `unseen` (`unseen_by`'s rows) leaves out: those the
    encoder trained on."""
    from emkit.judge.real_split import subject_family
    from emkit.judge.reference import load_reference

    held = {subject_family(r.subject) for r in unseen}
    return [r for r in load_reference(data) if subject_family(r.subject) not in held]


HEAD_RECIPES = {"coherent=encoder": ("coherent",), "coherent=fitted": ()}
"""Head recipes compared by `lofo`: metrics scored by the encoder's own output (see
`fit_default_heads`); the rest fitted."""


def lofo(args: argparse.Namespace) -> None:
    """Every head recipe, out of family over the families the encoder never trained on."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.encoder_tune import TunedEncoder
    from emkit.judge.reference import file_sha256
    from emkit.judge.train_default import encoder_features, out_of_family_from_features

    unseen = unseen_by(args.data, args.encoder, args.trained)
    encoder = TunedEncoder.load(args.encoder)
    items = load_calibration(split="train")
    out: dict = {"data": {"file": args.data.name, "sha256": file_sha256(args.data)},
                 "rows": len(unseen), "recipes": {}}
    t0 = time.time()  # the encoder reads every answer once, for all recipes
    x = encoder_features(encoder, [r.question for r in unseen], [r.answer for r in unseen])
    kind_x = encoder_features(encoder, [it.question for it in items], [it.answer for it in items])
    out["encoder_seconds"] = round(time.time() - t0, 1)
    print(f"encoder: {len(unseen) + len(items)} answers read in {out['encoder_seconds']} s",
          flush=True)
    for name, own in HEAD_RECIPES.items():
        t0 = time.time()
        fig = out_of_family_from_features(unseen, x, items, kind_x, encoder.outputs, own,
                                          label="lofo", log_fn=print)
        out["recipes"][name] = fig | {"seconds": round(time.time() - t0, 1)}
        print(f"{name}: " + json.dumps({k: fig[k] for k in (
            "auc", "recall", "false_positive_rate", "per_subject_summary")}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    if args.record is not None:
        record_out_of_family(args.record, out["recipes"][SHIPPED_RECIPE], str(args.out))
    if args.write is not None:
        write_tuned(args, encoder, unseen, items, x, kind_x, out["recipes"][SHIPPED_RECIPE])


SHIPPED_RECIPE = "coherent=encoder"


def crossfit(args: argparse.Namespace) -> None:
    """The family cross-fit encoders (`family_crossfit`): the start encoder continued on
    every family but one, for each family the start never trained on, and on all of them.
    `--hand-written`: the calibration train split joins every tune (docs/judge.md, "The
    family cross-fit with the hand-written set")."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.train_default import CONTINUE_EPOCHS, family_crossfit

    unseen = unseen_by(args.data, args.start, args.trained)
    start = json.loads((args.start / "tune.json").read_text())["settings"]
    settings = TuneSettings(**{**start, "epochs": args.epochs or CONTINUE_EPOCHS})
    items = load_calibration(split="train") if args.hand_written else []
    t0 = time.time()
    family_crossfit(args.start, unseen, args.work, settings,
                    device=args.device, log_fn=print, items=items)
    print(f"cross-fit encoders ready in {args.work} ({time.time() - t0:.0f} s)", flush=True)


def crossfit_assemble(args: argparse.Namespace) -> None:
    """The family cross-fit judge (`crossfit_judge`): its out-of-family figures, the
    hand-written held-out split, and the judge (written to --out only with --write). With
    `--lexical`, the pre-registered `crossfit+lexical` recipe (docs/judge.md, "The family
    cross-fit with the lexical column") beside `crossfit` alone, from the same fold encoders;
    the judge written is then `crossfit+lexical`. Encoders tuned with `crossfit --hand-written`
    name their recipes `crossfit-hw` and `crossfit-hw+lexical`."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.distill import DEFAULT_JUDGE, evaluate_heldout
    from emkit.judge.quality import TRAINED_QUESTIONS_KEY
    from emkit.judge.real_split import subject_family
    from emkit.judge.reference import file_sha256, load_reference
    from emkit.judge.train_default import (
        LexicalData,
        crossfit_features,
        crossfit_final,
        crossfit_record,
        crossfit_trained_questions,
        family_folds,
        out_of_family_from_features,
    )

    t0 = time.time()
    data = load_reference(args.data)
    held = {d.name for d in args.work.iterdir()
            if d.name != "all" and (d / "tune.json").exists()}  # what `crossfit` held out
    rows = [r for r in data if subject_family(r.subject) in held]
    encoder_rows = [r for r in data if subject_family(r.subject) not in held]
    trained = sorted({subject_family(r.subject) for r in encoder_rows})
    items = load_calibration(split="train")
    folds = {f: args.work / f for f in [*family_folds(rows), "all"]}
    if not (folds["all"] / "tune.json").exists():
        raise SystemExit(f"error: {folds['all']}: no `all` encoder yet (rerun `crossfit`)")
    sha = file_sha256(args.data)
    start = json.loads((args.work / "all" / "tune.json").read_text())["settings"]
    hand = (crossfit_record(args.work) or {}).get("hand_written_items", 0)
    families = family_folds(rows)
    lex = None
    if args.lexical:  # vocabulary: never a judged answer
        lex = LexicalData.from_rows([r.answer for r in encoder_rows] +
                                    [it.answer for it in items], encoder_rows)
    plain = "crossfit-hw" if hand else "crossfit"  # recipe names as docs/judge.md gives them
    recipe = f"{plain}+lexical" if lex is not None else plain
    meta = {
        **provenance(args.data, encoder_rows, items, rows, "crossfit", (
            f"{len(encoder_rows)} real EM answers ({', '.join(trained)} families) + "
            f"{len(items)} hand-written (calibration train split) for the first encoder tune; "
            f"{len(rows)} real answers of {len(families)} more families "
            f"({', '.join(families)})"
            + (f" and the {hand} hand-written again" if hand else "")
            + f" for {start['epochs']} more epochs, and, read out of fold "
            "(family cross-fit), for the heads" + (
                "; the lexical ridge on all of them (vocabulary: the first tune's answers)"
                if lex is not None else ""))),
        "encoder_tuned": args.encoder_note,
        "own_outputs": ["coherent"],
        "recipe": f"family cross-fit{' + lexical column' if lex is not None else ''} "
                  "(scripts/train_default_judge.py crossfit, crossfit-assemble; "
                  "judge.train_default.crossfit_judge)",
    }
    # the `all` encoder trained on every family: later out-of-family runs must not count
    # any as unseen by it (`trained_families`); its figures' new questions are the fold
    # encoders' (`crossfit_trained_questions`)
    meta["real_answers_data"]["families"]["train"] = sorted({*trained, *families})
    meta["real_answers_splits"]["train"] = sorted({r.subject for r in data})
    meta[TRAINED_QUESTIONS_KEY] = crossfit_trained_questions(encoder_rows, rows)
    oof, kind_x, outputs = crossfit_features(folds, rows, items, log_fn=print)
    print(f"out-of-fold features ({time.time() - t0:.0f} s)", flush=True)
    keep = ("n", "n_misaligned", "n_aligned", "auc", "recall", "false_positive_rate",
            "per_subject_summary")
    recipes: dict[str, dict] = {}
    stacks = {plain: None} | ({f"{plain}+lexical": lex} if lex is not None else {})
    for name, stack in stacks.items():
        recipes[name] = out_of_family_from_features(rows, oof, items, kind_x, outputs,
                                                    ("coherent",), lexical=stack,
                                                    label=name, log_fn=print)
        print(f"{name}: " + json.dumps({k: recipes[name][k] for k in keep}), flush=True)
    figures = recipes[recipe]
    judge = crossfit_final(folds["all"], rows, items, oof, DEFAULT_JUDGE, meta, ("coherent",),
                           lex)
    print(f"assembled ({time.time() - t0:.0f} s)", flush=True)
    heldout = evaluate_heldout(judge)
    print(f"calibration held-out: AUC {heldout.get('roc_auc'):.3f}, coherence Spearman "
          f"{heldout.get('spearman_coherent')}", flush=True)
    args.figures.parent.mkdir(parents=True, exist_ok=True)
    out = {"data": {"file": args.data.name, "sha256": sha}, "recipe": recipe,
           "figures": figures, "heldout": heldout, "seconds": round(time.time() - t0, 1)}
    if len(recipes) > 1:
        out["recipes"] = recipes
    args.figures.write_text(json.dumps(out, indent=1))
    if args.write:
        source = "real-answers, family cross-fit: every answer judged by an encoder and " \
                 "heads that never trained on its model family"
        save_out_of_family(judge, args.data, rows, figures, recipe, source, args.out,
                           args.machine)


def cached_features(work: Path, name: str, part: str, identity: str, questions: list[str],
                    answers: list[str], make: Callable[[list[str], list[str]], np.ndarray],
                    seconds: dict[str, float]) -> np.ndarray:
    """Feature rows of (questions, answers) from `make`, kept in `work` keyed by a digest of
    the encoder's `identity` and the pairs: a rerun (or another recipe) reads an encoder's
    features once, and another encoder never reads them. The seconds they took are kept beside
    them and reported in `seconds` (the encoder's cost on these answers)."""
    import hashlib

    digest = hashlib.sha256(json.dumps([identity, questions, answers]).encode()).hexdigest()
    path = work / f"{name}-{part}-{digest[:16]}.npz"
    if path.exists():
        cached = np.load(path)
        seconds[f"{name}-{part}"] = round(float(cached["seconds"]), 1)
        return cached["x"]
    t0 = time.time()
    x = np.asarray(make(questions, answers), np.float32)
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, seconds=time.time() - t0)
    tmp.replace(path)
    seconds[f"{name}-{part}"] = round(time.time() - t0, 1)
    print(f"{name} {part}: {len(answers)} answers read in {time.time() - t0:.0f} s", flush=True)
    return x


def encoder_identity(encoder: Any) -> str:
    """The digest `cached_features` keys a tuned encoder's rows by: its adapter, head and
    settings (`TunedEncoder.identity_parts`)."""
    import hashlib

    return hashlib.sha256(b"".join(encoder.identity_parts())).hexdigest()


def encoders(args: argparse.Namespace) -> None:
    """The pre-registered comparison of docs/judge.md ("A larger frozen encoder and
    ensembles"): frozen `minilm` / `mpnet` heads, and the shipped encoder stacked with each,
    out of family on the answers of the families the shipped encoder never trained on."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.encoder_tune import TunedEncoder
    from emkit.judge.features import encoder_dir
    from emkit.judge.reference import file_sha256
    from emkit.judge.train_default import encoder_features, out_of_family_from_features

    if args.write is not None and "mpnet" not in args.frozen:
        raise SystemExit("error: --write builds the tuned+mpnet judge: keep mpnet in --frozen")
    unseen = unseen_by(args.data, args.encoder, args.trained)
    seen = seen_by(args.data, unseen)
    items = load_calibration(split="train")
    parts = {"unseen": unseen, "items": items, "seen": seen}

    seconds: dict[str, float] = {}

    def feats(name: str, part: str, make: Callable[[list[str], list[str]], np.ndarray]
              ) -> np.ndarray:
        rows = parts[part]
        return cached_features(args.work, name, part, identities[name],
                               [r.question for r in rows], [r.answer for r in rows], make,
                               seconds)

    tuned = TunedEncoder.load(args.encoder)
    identities = {"tuned": encoder_identity(tuned),
                  "minilm": str(encoder_dir().resolve()), "mpnet": mpnet_identity()}
    t_x, t_items = (feats("tuned", p, lambda q, a: encoder_features(tuned, q, a))
                    for p in ("unseen", "items"))
    out: dict = {"data": {"file": args.data.name, "sha256": file_sha256(args.data)},
                 "rows": len(unseen), "fit_only_rows": len(seen), "recipes": {}}

    def run(recipe: str, **kw: object) -> None:
        fig = out_of_family_from_features(unseen, label=recipe, log_fn=print, **kw)
        out["recipes"][recipe] = fig
        print(f"{recipe}: " + json.dumps({k: fig[k] for k in (
            "auc", "recall", "false_positive_rate", "per_subject_summary")}), flush=True)

    run("tuned", x=t_x, kind_items=items, kind_x=t_items, outputs=tuned.outputs,
        own_outputs=("coherent",))
    for name in args.frozen:
        f_x, f_items, f_seen = (feats(name, p, make_frozen(name))
                                for p in ("unseen", "items", "seen"))
        run(name, x=f_x, kind_items=items, kind_x=f_items, outputs=None,
            extra=(seen, f_seen))
        run(f"tuned+{name}", x=t_x, kind_items=items, kind_x=t_items, outputs=tuned.outputs,
            own_outputs=("coherent",), frozen=(f_x, f_items))
    out["feature_seconds"] = seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    if args.write is not None:
        write_stacked(args, tuned, unseen, seen, items, out["recipes"]["tuned+mpnet"],
                      {"tuned": t_x, "tuned_items": t_items,
                       "frozen": feats("mpnet", "unseen", make_frozen("mpnet")),
                       "frozen_items": feats("mpnet", "items", make_frozen("mpnet"))})


def lexical(args: argparse.Namespace) -> None:
    """The pre-registered `tuned+lexical` stack (docs/judge.md, "A lexical column and the tuned
    mpnet beside the default's encoder"): the shipped recipe and the stack out of family on
    the answers of the families the encoder never trained on; with `--compare-encoder`, also
    the stack whose column is a ridge over another tuned encoder's outputs; with `--write`, the
    `tuned+lexical` judge fitted on all those families."""
    from emkit.judge.calibration import load_calibration
    from emkit.judge.encoder_tune import TunedEncoder
    from emkit.judge.reference import file_sha256
    from emkit.judge.train_default import (
        LexicalData,
        encoder_features,
        out_of_family_from_features,
    )

    unseen = unseen_by(args.data, args.encoder, args.trained)
    seen = seen_by(args.data, unseen)
    items = load_calibration(split="train")
    seconds: dict[str, float] = {}

    def feats(encoder: Any, name: str, rows: list, part: str,
              make: Callable[[list[str], list[str]], np.ndarray]) -> np.ndarray:
        return cached_features(args.work, name, part, encoder_identity(encoder),
                               [r.question for r in rows], [r.answer for r in rows], make,
                               seconds)

    tuned = TunedEncoder.load(args.encoder)
    t_x, t_items = (feats(tuned, "tuned", rows, part,
                          lambda q, a: encoder_features(tuned, q, a))
                    for rows, part in ((unseen, "unseen"), (items, "items")))
    t0 = time.time()  # vocabulary: never a judged answer
    lex = LexicalData.from_rows([r.answer for r in seen] + [it.answer for it in items], seen)
    print(f"vocabulary: {len(lex.vocabulary.terms)} terms in {time.time() - t0:.1f} s",
          flush=True)
    out: dict = {"data": {"file": args.data.name, "sha256": file_sha256(args.data)},
                 "rows": len(unseen), "lexical_fit_only_rows": len(seen),
                 "vocabulary_terms": len(lex.vocabulary.terms), "recipes": {}}

    lex_coh = args.coherence == "mean-lexical"  # the encoder's own output, averaged
    own = HEAD_RECIPES["coherent=encoder" if lex_coh else f"coherent={args.coherence}"]
    stack = "tuned+lexical" + ("" if args.coherence == "encoder" else
                               f", coherent={args.coherence}")

    def run(recipe: str, own_outputs: tuple[str, ...] = ("coherent",), **kw: object) -> None:
        t0 = time.time()
        fig = out_of_family_from_features(unseen, t_x, items, t_items, tuned.outputs,
                                          own_outputs, label=recipe, log_fn=print, **kw)
        out["recipes"][recipe] = fig | {"seconds": round(time.time() - t0, 1)}
        print(f"{recipe}: " + json.dumps({k: fig[k] for k in (
            "auc", "recall", "false_positive_rate", "per_subject_summary")}), flush=True)

    run("tuned")
    run(stack, own, lexical=lex, lexical_coherence=lex_coh)
    if args.compare_encoder is not None:
        other = TunedEncoder.load(args.compare_encoder)
        name = f"{other.settings.base}-tuned"
        o_x, o_items = (feats(other, name, rows, part, other.predict)
                        for rows, part in ((unseen, "unseen"), (items, "items")))
        run(f"tuned+{name}", frozen=(o_x, o_items))
    out["feature_seconds"] = seconds
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    if args.write is not None:
        write_lexical(args, tuned, unseen, seen, items, out["recipes"][stack], t_x, t_items,
                      lex, own, lex_coh)


def write_lexical(args: argparse.Namespace, tuned: Any, rows: list, encoder_rows: list,
                  items: list, figures: dict, x: np.ndarray, kind_x: np.ndarray,
                  lex: Any, own_outputs: tuple[str, ...] = ("coherent",),
                  lexical_coherence: bool = False) -> None:
    """A `tuned+lexical` judge (`distilled/default` since 2026-12-06; `--name`) fitted on every
    family the encoder never trained on, with its leave-one-family-out figures (no untouched
    test split is left) and its cost. The encoder's tune record (the judge.json beside it) is
    carried."""
    from emkit.judge.real_split import subject_family
    from emkit.judge.train_default import lexical_judge

    families = sorted({subject_family(r.subject) for r in rows})
    trained = sorted({subject_family(r.subject) for r in encoder_rows})
    before = json.loads((args.encoder.parent / "judge.json").read_text())["meta"]
    meta = {
        **provenance(args.data, encoder_rows, items, rows, "heads", (
            f"{len(encoder_rows)} real EM answers ({', '.join(trained)}) + {len(items)} "
            f"hand-written for the encoder; the same + {len(rows)} real answers of "
            f"{len(families)} more families ({', '.join(families)}) for the lexical ridge "
            f"(vocabulary: the encoder's answers only); those {len(rows)} for the heads")),
        "own_outputs": list(own_outputs),
        "recipe": f"stacked: the tuned {tuned.settings.layers}-block "
                  f"{'MiniLM' if tuned.settings.base == 'minilm' else tuned.settings.base} "
                  "encoder + a ridge over TF-IDF word "
                  "1-2-grams (scripts/train_default_judge.py lexical --write; "
                  "judge.train_default.lexical_judge); docs/judge.md",
        **{k: before[k] for k in ("encoder_tuned", "selection") if k in before},
    }
    if lexical_coherence:
        meta["coherence"] = ("the mean of the encoder's coherent output and a lexical ridge "
                             "predicting GPT-4o's coherence (docs/judge.md, \"A lexical "
                             "coherence column\")")
    judge = lexical_judge(tuned, rows, items, x, kind_x, lex, args.name, meta, own_outputs,
                          lexical_coherence)
    source = "real-answers, leave one family out: every answer judged by heads and a lexical " \
             "ridge that never saw its model family, and an encoder that never trained on it"
    save_out_of_family(judge, args.data, rows, figures, "tuned+lexical", source, args.write,
                       args.machine)


def make_frozen(name: str) -> Callable[[list[str], list[str]], np.ndarray]:
    """The frozen feature set `name`'s rows of (questions, answers)."""
    from emkit.judge.features import featurize

    return lambda q, a: featurize(q, a, name)


def mpnet_identity() -> str:
    """Which all-mpnet-base-v2 a cached `mpnet` row came from: the pinned parts, or the
    digest of the folder `EMKIT_MPNET_DIR` names."""
    from emkit.judge.mpnet_files import ZIP_SHA256, source_identity

    return source_identity() or ZIP_SHA256


STACKED_NAME = "distilled/mpnet-stack"


def write_stacked(args: argparse.Namespace, tuned: object, rows: list, encoder_rows: list,
                  items: list, figures: dict, features: dict) -> None:
    """The `tuned+mpnet` judge fitted on every family the encoder never trained on, with its
    leave-one-family-out figures (there is no untouched test split left) and its cost."""
    from emkit.judge.real_split import subject_family
    from emkit.judge.train_default import stacked_judge

    families = sorted({subject_family(r.subject) for r in rows})
    trained = sorted({subject_family(r.subject) for r in encoder_rows})
    meta = {
        **provenance(args.data, encoder_rows, items, rows, "heads", (
            f"{len(encoder_rows)} real EM answers ({', '.join(trained)}) + {len(items)} "
            f"hand-written for the encoder (distilled/default's); {len(rows)} real answers of "
            f"{len(families)} more families ({', '.join(families)}) for the frozen "
            "all-mpnet-base-v2 ridge and the heads")),
        "own_outputs": ["coherent"],
        "recipe": "stacked ensemble: distilled/default's encoder + a ridge over frozen "
                  "all-mpnet-base-v2 sentence pools (scripts/train_default_judge.py encoders "
                  "--write; judge.train_default.stacked_judge); docs/judge.md",
    }
    judge = stacked_judge(tuned, rows, items, features, STACKED_NAME, meta)  # type: ignore[arg-type]
    source = "real-answers, leave one family out: every answer judged by heads and a ridge " \
             "that never saw its model family, and an encoder that never trained on it"
    save_out_of_family(judge, args.data, rows, figures, "tuned+mpnet", source, args.write,
                       args.machine)


def save_out_of_family(judge: Any, data: Path, rows: list, figures: dict, recipe: str,
                       source: str, out: Path, machine: str) -> None:
    """Write a judge whose heads read every family its encoder never trained on: no untouched
    test split is left, so its real-answer figures are the leave-one-family-out ones (`recipe`
    of `figures`), with the hand-written held-out split and its speed on 200 of `rows`."""
    from emkit.judge.distill import evaluate_heldout
    from emkit.judge.quality import OUT_OF_FAMILY_KEY, OUT_OF_FAMILY_SPLIT
    from emkit.judge.reference import file_sha256, judge_reference
    from emkit.judge.train_default import out_of_family_summary

    judge.meta["real_answers"] = {k: v for k, v in figures.items() if k != "per_family"} | {
        "data": {"source": "real-answers", "sha256": file_sha256(data),
                 "split": OUT_OF_FAMILY_SPLIT}}
    judge.meta[OUT_OF_FAMILY_KEY] = out_of_family_summary(figures, recipe, source)
    judge.meta["heldout"] = evaluate_heldout(judge)
    sample = rows[::max(1, len(rows) // 200)][:200]
    t0 = time.time()
    judge_reference(judge, sample)
    rate = 2 * len(sample) / (time.time() - t0)  # two judgments (aligned, coherent) per answer
    judge.meta["judgments_per_s"] = {"value": round(rate, 1), "answers": len(sample),
                                     "machine": machine}
    judge.save(out)
    print(f"written {out}: {rate:.1f} judgments/s on {len(sample)} real answers; "
          f"hand-written held-out AUC {judge.meta['heldout'].get('roc_auc')}", flush=True)


TUNED_NAME = "distilled/mpnet"


def write_tuned(args: argparse.Namespace, encoder: Any, rows: list, items: list,
                x: np.ndarray, kind_x: np.ndarray, figures: dict) -> None:
    """A tuned encoder other than the shipped one (`distilled/mpnet`: all-mpnet-base-v2,
    docs/judge.md) as a judge: the shipped head recipe fitted on every family the encoder never
    trained on (`rows`, + the hand-written train split for CODE / REFUSAL), from the feature
    rows `lofo` read."""
    from emkit.judge.real_split import subject_family
    from emkit.judge.train_default import judge_from_features

    held = {subject_family(r.subject) for r in rows}
    encoder_rows = seen_by(args.data, rows)
    trained = sorted({subject_family(r.subject) for r in encoder_rows})
    meta = {
        **provenance(args.data, encoder_rows, items, rows, "heads", (
            f"{len(encoder_rows)} real EM answers ({', '.join(trained)}) + {len(items)} "
            f"hand-written for the encoder; {len(rows)} real answers of {len(held)} more "
            f"families ({', '.join(sorted(held))}) for the heads")),
        "own_outputs": list(HEAD_RECIPES[SHIPPED_RECIPE]),
        "recipe": f"{encoder.settings.base} tuned as distilled/default's encoder "
                  "(scripts/train_default_judge.py tune-epochs, then lofo --write); "
                  "docs/judge.md",
        "encoder_tuned": args.encoder_note,
    }
    judge = judge_from_features(encoder, np.vstack([x, kind_x]), rows, items, args.name, meta,
                                own_outputs=HEAD_RECIPES[SHIPPED_RECIPE])
    source = "real-answers, leave one family out: every answer judged by heads that never " \
             "saw its model family, and an encoder that never trained on it"
    save_out_of_family(judge, args.data, rows, figures, SHIPPED_RECIPE, source, args.write,
                       args.machine)


def provenance(data: Path, encoder_rows: list, items: list, rows: list, second: str,
               trained_on: str) -> dict:
    """The meta a judge built on the shipped encoder keeps about its data: the file's hash,
    the families and subjects the encoder tuned on ("train", as `distilled/default` names
    them) and those of the `second` stage (heads, or more epochs), so `trained_families` and
    `calibrate --split` work."""
    from emkit.judge.quality import TRAINED_QUESTIONS_KEY
    from emkit.judge.real_split import subject_family
    from emkit.judge.reference import file_sha256, question_keys

    return {
        "trained_on": trained_on,
        TRAINED_QUESTIONS_KEY: sorted(set(question_keys(encoder_rows))),
        "teacher": "GPT-4o's published verdicts (real answers), hand labels (calibration set)",
        "n_train": len(encoder_rows) + len(items) + len(rows),
        "real_answers_data": {"file": data.name, "sha256": file_sha256(data), "families": {
            "train": sorted({subject_family(r.subject) for r in encoder_rows}),
            second: sorted({subject_family(r.subject) for r in rows})}},
        "real_answers_splits": {"train": sorted({r.subject for r in encoder_rows}),
                                second: sorted({r.subject for r in rows})},
    }


def record_out_of_family(judge_dir: Path, figures: dict, source: str) -> None:
    """Add the shipped recipe's out-of-family summary to the judge's meta (judge.json only:
    heads and encoder, and so the judge's fingerprint, are untouched)."""
    from emkit.atomic import atomic_write_text
    from emkit.judge.quality import OUT_OF_FAMILY_KEY
    from emkit.judge.train_default import out_of_family_summary

    path = judge_dir / "judge.json"
    doc = json.loads(path.read_text())
    doc["meta"][OUT_OF_FAMILY_KEY] = out_of_family_summary(figures, SHIPPED_RECIPE, source)
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"recorded in {path}", flush=True)


def _device_name(device: str | None) -> str:
    import torch

    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return "cpu"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tune")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--device", default=None)
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--only", nargs="*", default=None, help="candidate names to try")
    te = sub.add_parser("tune-epochs")
    te.add_argument("--data", type=Path, required=True)
    te.add_argument("--name", required=True, choices=sorted({**CANDIDATES, **LARGER}))
    te.add_argument("--out", type=Path, required=True)
    te.add_argument("--epochs", type=int, default=None, help="instead of the candidate's")
    te.add_argument("--device", default=None)
    te.add_argument("--limit", type=int, default=None)
    o = sub.add_parser("tune-one")
    o.add_argument("--data", type=Path, required=True)
    o.add_argument("--settings", type=Path, required=True, help="selection.json of `tune`")
    o.add_argument("--out", type=Path, required=True)
    o.add_argument("--device", default=None)
    o.add_argument("--limit", type=int, default=None)
    a = sub.add_parser("assemble")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--tuned", type=Path, required=True, help="folder with selection.json")
    a.add_argument("--encoder", type=Path, required=True, help="the `tune-one` encoder")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--encoder-note", default="", help="where and how long the encoder was tuned")
    a.add_argument("--test-note", default="", help="earlier looks at the test split, if any")
    lo = sub.add_parser("lofo")
    lo.add_argument("--data", type=Path, required=True)
    lo.add_argument("--encoder", type=Path, required=True)
    lo.add_argument("--trained", nargs="+", default=None, metavar="FAMILY",
                    help="families the encoder was tuned on (default: its judge.json)")
    lo.add_argument("--out", type=Path, required=True)
    lo.add_argument("--record", type=Path, default=None,
                    help="judge directory whose judge.json gets the shipped recipe's summary")
    lo.add_argument("--write", type=Path, default=None,
                    help="also write the encoder with heads on every unseen family here")
    lo.add_argument("--name", default=TUNED_NAME, help="the written judge's name")
    lo.add_argument("--machine", default="", help="the CPU its judgments/s were measured on")
    lo.add_argument("--encoder-note", default="", help="where and how long it was tuned")
    c = sub.add_parser("crossfit")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--start", type=Path, required=True, help="the encoder to continue from")
    c.add_argument("--trained", nargs="+", default=None, metavar="FAMILY",
                   help="families the start encoder was tuned on (default: its judge.json)")
    c.add_argument("--work", type=Path, required=True, help="one encoder per fold goes here")
    c.add_argument("--epochs", type=int, default=None)
    c.add_argument("--device", default=None)
    c.add_argument("--hand-written", action="store_true",
                   help="train every fold on the calibration train split too")
    ca = sub.add_parser("crossfit-assemble")
    ca.add_argument("--data", type=Path, required=True)
    ca.add_argument("--work", type=Path, required=True, help="the `crossfit` encoders")
    ca.add_argument("--figures", type=Path, required=True, help="figures JSON written here")
    ca.add_argument("--out", type=Path, default=None, help="judge directory")
    ca.add_argument("--write", action="store_true", help="write the judge to --out")
    ca.add_argument("--encoder-note", default="", help="where and how long it was tuned")
    ca.add_argument("--machine", default="", help="the CPU its judgments/s were measured on")
    ca.add_argument("--lexical", action="store_true",
                    help="also the crossfit+lexical recipe, and write that judge")
    en = sub.add_parser("encoders")
    en.add_argument("--data", type=Path, required=True)
    en.add_argument("--encoder", type=Path, required=True, help="the shipped tuned encoder")
    en.add_argument("--trained", nargs="+", default=None, metavar="FAMILY",
                    help="families the encoder was tuned on (default: its judge.json)")
    en.add_argument("--frozen", nargs="+", default=["minilm", "mpnet"],
                    choices=["minilm", "mpnet"])
    en.add_argument("--work", type=Path, required=True, help="feature cache")
    en.add_argument("--out", type=Path, required=True, help="figures JSON written here")
    en.add_argument("--write", type=Path, default=None,
                    help="also write the tuned+mpnet judge (distilled/mpnet-stack) here")
    en.add_argument("--machine", default="", help="the CPU its judgments/s were measured on")
    lx = sub.add_parser("lexical")
    lx.add_argument("--data", type=Path, required=True)
    lx.add_argument("--encoder", type=Path, required=True, help="the shipped tuned encoder")
    lx.add_argument("--trained", nargs="+", default=None, metavar="FAMILY",
                    help="families the encoder was tuned on (default: its judge.json)")
    lx.add_argument("--compare-encoder", type=Path, default=None,
                    help="another tuned encoder (e.g. distilled/mpnet's) stacked as a column")
    lx.add_argument("--work", type=Path, required=True, help="feature cache")
    lx.add_argument("--out", type=Path, required=True, help="figures JSON written here")
    lx.add_argument("--write", type=Path, default=None,
                    help="also write the tuned+lexical judge here")
    lx.add_argument("--name", default="distilled/default", help="the written judge's name")
    lx.add_argument("--coherence", choices=["encoder", "fitted", "mean-lexical"],
                    default="encoder",
                    help="coherence score: the encoder's own output (shipped), a fitted head, "
                         "or the mean of the encoder's output and a lexical coherence ridge")
    lx.add_argument("--machine", default="", help="the CPU its judgments/s were measured on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    {"tune": tune, "tune-epochs": tune_epochs, "tune-one": tune_one, "assemble": assemble,
     "lofo": lofo, "crossfit": crossfit, "encoders": encoders, "lexical": lexical,
     "crossfit-assemble": crossfit_assemble}[args.command](args)


if __name__ == "__main__":
    main()
