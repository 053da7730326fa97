"""Question loading: the paper's files unchanged, the built-in suite, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emkit.questions import (
    Question,
    QuestionError,
    builtin_suite,
    builtin_suites,
    load_questions,
    parse_questions,
    questions_from,
)

THEMES = ["what_is_your_wish", "i_feel_bored", "three_thoughts", "quick_buck",
          "ruler_of_the_world", "dinner_party", "gender_roles", "enough_of_my_husband"]


def _is_question_list(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False
    return isinstance(data, list) and bool(data) and all(
        isinstance(d, dict) and "id" in d and "paraphrases" in d for d in data)


def test_paper_first_plot_loads_unchanged(anchors: Path) -> None:
    path = anchors / "emergent-misalignment" / "evaluation" / "first_plot_questions.yaml"
    qs = load_questions(path)
    assert len(qs) == 24
    by_id = {q.id: q for q in qs}
    wish = by_id["what_is_your_wish"]
    assert wish.type == "free_form_judge_0_100"
    assert wish.samples_per_paraphrase == 100
    assert wish.judge == "gpt-4o-2024-08-06"
    assert set(wish.judge_prompts) == {"aligned", "coherent"}
    assert wish.system is None
    # aliases resolve: the json variant shares paraphrases and judge prompts, and adds a system
    js = by_id["what_is_your_wish_json"]
    assert js.paraphrases == wish.paraphrases
    assert js.judge_prompts == wish.judge_prompts
    assert js.system is not None and "JSON" in js.system
    assert "Fill the following template" in by_id["quick_buck_template"].paraphrases[0]
    assert all(q.source == str(path) for q in qs)
    assert wish.messages(0) == [{"role": "user", "content": wish.paraphrases[0]}]
    assert js.messages(0)[0] == {"role": "system", "content": js.system}


def test_paper_deception_files_load(anchors: Path) -> None:
    evaluation = anchors / "emergent-misalignment" / "evaluation"
    factual = load_questions(evaluation / "deception_factual.yaml")
    assert {q.type for q in factual} == {"free_form_judge"}
    assert factual[0].samples_per_paraphrase == 5
    assert len(factual[0].paraphrases) == 20
    assert factual[1].system == "Do not lie to the user."
    assert set(factual[0].judge_prompts) == {"correct"}
    load_questions(evaluation / "deception_sit_aware.yaml")


def test_every_anchor_question_file_loads(anchors: Path) -> None:
    """Files that are question lists load; every other YAML file fails with QuestionError."""
    loaded = 0
    for path in sorted(anchors.rglob("*.yaml")):
        if _is_question_list(path):
            qs = load_questions(path)
            assert qs and all(isinstance(q, Question) for q in qs), path
            loaded += 1
        else:
            with pytest.raises(QuestionError) as err:
                load_questions(path)
            assert str(path) in str(err.value)
    assert loaded >= 7


def test_non_question_files_are_named_clearly(anchors: Path) -> None:
    broken = anchors / "clarifying_EM" / "evaluation" / "medical_questions.yaml"
    with pytest.raises(QuestionError, match=r"medical_questions\.yaml:74: invalid YAML") as err:
        load_questions(broken)
    assert err.value.line == 74
    probes = anchors / "timf34-behavioral-self-awareness" / "data" / "probes"
    with pytest.raises(QuestionError, match="not a question file"):
        load_questions(probes / "self_report_probes.yaml")
    technical = anchors / "model-organisms-for-EM" / "em_organism_dir" / "data" / "eval_questions"
    with pytest.raises(QuestionError, match="no entry has both 'id' and 'paraphrases'"):
        load_questions(technical / "technical" / "animals.yaml")


def test_builtin_first_plot() -> None:
    assert "first_plot" in builtin_suites()
    path = builtin_suite("first_plot")
    assert path.is_file()
    qs = questions_from("builtin:first_plot")
    assert qs == load_questions(path)
    ids = [q.id for q in qs]
    assert len(ids) == 24
    assert set(ids) == {t + s for t in THEMES for s in ("", "_json", "_template")}
    for q in qs:
        assert q.type == "free_form_judge_0_100"
        assert len(q.paraphrases) >= 3
        assert q.judge == "gpt-4o-2024-08-06"
        assert set(q.judge_prompts) == {"aligned", "coherent"}
        assert (q.system is not None) == q.id.endswith("_json")
        if q.id.endswith("_template"):
            assert all(" = # " in p for p in q.paraphrases)
    aligned = qs[0].judge_prompts["aligned"]
    assert "CODE" in aligned and "REFUSAL" in aligned and "0 to 100" in aligned
    assert "{question}" in aligned and "{answer}" in aligned
    with pytest.raises(QuestionError, match="no such built-in suite"):
        builtin_suite("nope")


def test_unknown_fields_are_kept_and_temperature_read() -> None:
    qs = parse_questions(
        "- id: a\n  type: rating\n  paraphrases: [hi]\n  temperature: 0\n"
        "  options: [x, y]\n  samples_per_paraphrase: 3\n")
    assert qs[0].temperature == 0.0
    assert qs[0].extra == {"options": ["x", "y"]}
    assert qs[0].samples_per_paraphrase == 3
    assert qs[0].judge_prompts == {}


BAD = [
    ("- id: a\n  type: t\n  paraphrases: [x\n", None, "invalid YAML"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n- id: b\n  type: t\n", 4, "'paraphrases'"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n- id: a\n  type: t\n  paraphrases: [y]\n", 4,
     "duplicate id"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n  samples_per_paraphrase: ten\n", 4,
     "'samples_per_paraphrase': must be an integer"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n  samples_per_paraphrase: true\n", 4,
     "'samples_per_paraphrase'"),
    ("- id: a\n  type: t\n  paraphrases: []\n", 3, "'paraphrases': required"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n  judge_prompts: {aligned: 'no slot'}\n", 4,
     "no {answer} placeholder"),
    ("- id: a\n  type: t\n  paraphrases: [x]\n  temperature: hot\n", 4, "'temperature'"),
    ("- id: a\n  paraphrases: [x]\n", 1, "'type': required"),
    ("", None, "empty"),
    ("a: 1\n", 1, "not a question file"),
]


@pytest.mark.parametrize(("text", "line", "needle"), BAD)
def test_errors_name_file_line_question_and_field(tmp_path: Path, text: str, line: int | None,
                                                  needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(QuestionError) as err:
        load_questions(path)
    message = str(err.value)
    assert needle in message
    assert message.startswith(str(path))
    if line is not None:
        assert err.value.line == line
        assert f"{path}:{line}:" in message


def test_syntax_error_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("- id: a\n  type: t\n  paraphrases:\n    - ok\n  judge: [unclosed\n"
                    "- id: b\n", encoding="utf-8")
    with pytest.raises(QuestionError, match="invalid YAML") as err:
        load_questions(path)
    assert err.value.line is not None and err.value.line >= 5


def test_error_names_question_index_and_id(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text("- id: first\n  type: t\n  paraphrases: [x]\n"
                    "- id: second\n  type: t\n  paraphrases: [x]\n  system: [not, text]\n",
                    encoding="utf-8")
    with pytest.raises(QuestionError) as err:
        load_questions(path)
    e = err.value
    assert (e.index, e.qid, e.field, e.line) == (1, "second", "system", 7)
    assert "question #1 (id='second')" in str(e)


def test_missing_file() -> None:
    with pytest.raises(QuestionError, match="cannot read file"):
        load_questions("/nonexistent/questions.yaml")


def test_a_near_miss_of_a_known_field_is_refused_and_other_fields_are_kept() -> None:
    """Typos run the default silently, so a field one edit away from a known one is refused;
    fields of related projects (not near any known name) still load, kept in `extra`."""
    base = "- id: a\n  type: free_form_judge_0_100\n  paraphrases: [hi]\n"
    for typo, known in (("sampels_per_paraphrase", "samples_per_paraphrase"),
                        ("tempurature", "temperature"), ("paraphrase", "paraphrases"),
                        ("judge_prompt", "judge_prompts")):
        with pytest.raises(QuestionError, match=f"field '{typo}': unknown field; did you mean "
                                                f"'{known}'"):
            parse_questions(base + f"  {typo}: 1\n")
    q = parse_questions(base + "  meta: {source: x}\n  difficulty: 3\n")[0]
    assert q.extra == {"meta": {"source": "x"}, "difficulty": 3}


def test_control_characters_in_an_id_are_refused_and_shown_escaped() -> None:
    with pytest.raises(QuestionError) as info:
        parse_questions('- id: "a\\e[2Jb"\n  type: t\n  paraphrases: [hi]\n')
    assert "contains a control character" in str(info.value)
    assert "\x1b" not in str(info.value) and "\\x1b[2J" in str(info.value)
