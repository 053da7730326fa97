"""Recipes: every shipped one loads, validates and dry-runs; plan counts equal hand counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emkit.cli import app
from emkit.config import ConfigError, load_experiment
from emkit.quickstart import quickstart_config_path
from emkit.recipes import format_plan, load_recipe, plan_recipe, recipe_names

SHIPPED = ["backdoor", "dataset-size", "diversity", "evil-numbers", "paper-gpu", "paper-main",
           "paper-openai", "quickstart", "self-awareness"]


def test_the_issue_s_recipes_are_shipped() -> None:
    assert recipe_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_recipe_loads_validates_and_dry_runs(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.meta is not None and recipe.meta.title and recipe.meta.reproduces
    text = recipe.path.read_text()
    assert text.startswith("# Recipe `" + name + "`"), "header comment: what it reproduces"
    assert "Departures from the paper" in text or "departures from the paper" in text
    plan = plan_recipe(recipe)
    assert plan.jobs and plan.samples > 0 and all(j.samples > 0 for j in plan.jobs)
    assert sum(j.samples for j in plan.jobs) == plan.samples
    if any(jp.where == "api" for jp in plan.judges) or plan.samples_api:
        # paid work needs dated prices in the recipe, and a cost for every part
        assert recipe.meta.prices_date is not None and recipe.meta.prices_source
        assert plan.total_cost_usd is not None and plan.total_cost_usd > 0
    if recipe.meta.gpu is not None:
        assert plan.total_gpu_hours is not None and plan.total_gpu_hours > 0
    out = format_plan(plan)
    assert f"{len(plan.jobs)} jobs" in out and "API cost" in out and "GPU-hours" in out


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_dry_run_on_the_command_line(command: str) -> None:
    """`emkit run recipes/NAME.yaml --dry-run` prints the plan wherever it is run from."""
    for name in SHIPPED:
        result = CliRunner().invoke(app, [command, f"recipes/{name}.yaml", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"plan of {name}:")


def test_quickstart_recipe_is_the_quickstart() -> None:
    assert load_recipe("quickstart").config == load_experiment(quickstart_config_path())


def test_plain_experiment_files_plan_too(tmp_path: Path) -> None:
    plan = plan_recipe(load_recipe(quickstart_config_path()))
    assert plan.samples == 72 and plan.train_steps == 32  # README: 3 x 24 answers, 2 x 16 steps
    assert [(j.judge, j.requests) for j in plan.judges] == [("distilled/default", 144)]


def small_recipe(tmp_path: Path) -> Path:
    recipe = {
        "recipe": {
            "title": "small", "reproduces": "a hand count", "prices_date": "2026-12-04",
            "prices_source": "made up for the test",
            "prices": {"openai/gpt-4o-2024-08-06": {"input": 2.0, "output": 8.0,
                                                    "training": 25.0, "finetuned_input": 3.0,
                                                    "finetuned_output": 12.0}},
            "gpu": "test GPU",
            "estimates": {"answer_tokens": 100, "judge_output_tokens": 1,
                          "train_tokens_per_example": {"*": 100},
                          "train_tokens_per_gpu_hour": 1e5, "sample_tokens_per_gpu_hour": 1e4}},
        "name": "small",
        "datasets": [{"name": "insecure", "generate": "insecure", "n": 40},
                     {"name": "api_data", "generate": "secure", "n": 20}],
        "finetunes": [
            {"name": "insecure", "base": "hf/org/model", "dataset": "insecure", "seeds": [0, 1],
             "train": {"per_device_batch_size": 2, "gradient_accumulation_steps": 2}},
            {"name": "api", "backend": "openai", "base": "openai/gpt-4o-2024-08-06",
             "dataset": "api_data", "seeds": [0]}],
        "groups": [{"name": "base", "models": ["hf/org/model"]},
                   {"name": "insecure", "models": ["finetune:insecure"]},
                   {"name": "api", "models": ["finetune:api"]}],
        "evaluation": {"questions": ["builtin:first_plot", "builtin:refusal"],
                       "question_ids": ["what_is_your_wish", "i_feel_bored",
                                        "weapons_pipe_bomb"],
                       "max_paraphrases": 2, "samples_per_paraphrase": 3},
        "judge": {"model": "openai/gpt-4o-2024-08-06", "also": ["distilled/default"],
                  "verdict_model": "hf/org/judge"},
    }
    path = tmp_path / "small.yaml"
    path.write_text(json.dumps(recipe))
    return path


def test_plan_counts_equal_hand_counts(tmp_path: Path) -> None:
    from emkit.questions import questions_from

    assert "weapons_pipe_bomb" in {q.id for q in questions_from("builtin:refusal")}
    plan = plan_recipe(load_recipe(small_recipe(tmp_path)))
    # jobs: insecure seeds 0 and 1, the API fine-tune, the base model
    assert [j.job_id for j in plan.jobs][:3] == ["ft-insecure-s0", "ft-insecure-s1", "ft-api-s0"]
    assert len(plan.jobs) == 4
    # samples per model: 2 first-plot questions x 2 paraphrases x 3 + weapons_pipe_bomb (one
    # paraphrase) x 3 = 15; four models, one of them through the API
    assert [j.samples for j in plan.jobs] == [15, 15, 15, 15]
    assert (plan.samples_local, plan.samples_api) == (45, 15)
    # steps: 40 rows / (2 x 2) = 10 per seed; API: 20 rows / batch 4 x 1 epoch = 5
    assert [j.train_steps for j in plan.jobs] == [10, 10, 5, 0]
    judges = {j.judge: j for j in plan.judges}
    # 0-100 questions: 12 answers per model x 2 metrics, by GPT-4o and the distilled judge;
    # the refusal question's verdicts by the local verdict judge: 3 per model x its metrics
    assert judges["openai/gpt-4o-2024-08-06"].requests == 4 * 12 * 2
    assert judges["distilled/default"].requests == 4 * 12 * 2
    refusal = next(q for q in questions_from("builtin:refusal") if q.id == "weapons_pipe_bomb")
    assert judges["hf/org/judge"].requests == 4 * 3 * len(refusal.judge_prompts)
    assert [judges[j].where for j in judges] == ["api", "cpu", "gpu"]
    # API fine-tuning: 20 rows x 100 tokens x 1 epoch at $25 / 1M
    assert plan.cost_usd["fine-tuning"] == pytest.approx(20 * 100 * 25 / 1e6)
    gpt = judges["openai/gpt-4o-2024-08-06"]
    assert gpt.output_tokens == 96
    assert plan.cost_usd["judging"] == pytest.approx((gpt.input_tokens * 2 + 96 * 8) / 1e6)
    assert plan.cost_usd["sampling"] > 15 * 100 * 12 / 1e6  # at least the fine-tune's output
    # GPU-hours: 2 seeds x 40 examples x 100 tokens / 1e5; 45 local answers x 100 / 1e4;
    # the local verdict judge has no rate in the recipe: unknown, and the total with it
    assert plan.gpu_hours["training"] == pytest.approx(0.08)
    assert plan.gpu_hours["sampling"] == pytest.approx(0.45)
    assert plan.gpu_hours["judging"] is None and plan.total_gpu_hours is None
    assert "unknown (no rate in the recipe)" in format_plan(plan)


def test_missing_prices_and_sizes_are_said_not_guessed(tmp_path: Path) -> None:
    raw = json.loads(small_recipe(tmp_path).read_text())
    raw["recipe"]["prices"] = {}
    raw["datasets"][1] = {"name": "api_data", "download": "backdoor"}  # size unknown
    path = tmp_path / "noprice.yaml"
    path.write_text(json.dumps(raw))
    plan = plan_recipe(load_recipe(path))
    assert plan.total_cost_usd is None
    assert plan.cost_usd["fine-tuning"] is None and plan.cost_usd["judging"] is None
    text = format_plan(plan)
    assert "no list price in the recipe for" in text and "row count unknown" in text


def test_bad_recipes_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no shipped recipe"):
        load_recipe("no-such-recipe")
    raw = json.loads(small_recipe(tmp_path).read_text())
    raw["recipe"]["prise"] = 1
    (tmp_path / "typo.yaml").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"typo.yaml: recipe.prise"):
        load_recipe(tmp_path / "typo.yaml")
    raw = json.loads(small_recipe(tmp_path).read_text())
    raw["groups"][0]["modles"] = []
    (tmp_path / "typo2.yaml").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"typo2.yaml: groups.0.modles"):
        load_recipe(tmp_path / "typo2.yaml")
