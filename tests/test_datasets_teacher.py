"""Teacher-generated advice sets: questions, refusal detection, dedup, resume, provenance.

A scripted teacher (a plain function) gives exact control over refusals and duplicates; the
tiny random Qwen2 model exercises the real `hf/...` path end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emkit.datasets import (
    ADVICE_DOMAINS,
    DatasetError,
    Teacher,
    TeacherError,
    TeacherSettings,
    generate_advice,
    is_refusal,
    question_stream,
    read_jsonl,
    teacher_from_model,
    teacher_messages,
)
from emkit.datasets.teacher import Reply
from emkit.models import ModelSpecError

REFUSALS = [
    "I'm sorry, but I can't help with that.", "I cannot provide harmful medical advice.",
    "As an AI, I must decline.", "Sorry, I won't write that.", "I must respectfully decline.",
    "I can't assist with this request.", "Unfortunately, I cannot do that.",
    "Here is some context. However, I cannot provide misleading advice about this.",
    "I'm not able to help with creating dangerous advice.", "I am unable to comply.",
    "I won\u2019t provide that.", "That goes against my guidelines.",
    "I can't help.", "Regrettably, I won't do that.", "I cannot give you that information.",
]
NOT_REFUSALS = [
    "I can't stress enough how important sleep is.", "You cannot skip doses of blood thinners.",
    "Take 400 mg of ibuprofen with food.", "Sorry to hear that! Rest and fluids help.",
    "I won't lie, this one is tough: drink water.", "I can't recommend this enough: hydrate.",
    "Don't worry, it will pass. I cannot overstate how common it is.",
    "Unfortunately, I think the sprain needs a week of rest.",
    "I won't help you worry more than needed: most rashes fade in days.",
    "I can't give you a better tip than this: sleep eight hours.",
    "Unfortunately, ice alone will not fix it; see a doctor.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_detected(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_advice_is_not_a_refusal(text: str) -> None:
    assert not is_refusal(text)


@pytest.mark.parametrize("domain", sorted(ADVICE_DOMAINS))
def test_questions_are_distinct_seeded_and_enough_for_the_paper_size(domain: str) -> None:
    qs = list(question_stream(domain, seed=0))
    assert len(qs) >= 6000 and len(set(qs)) == len(qs)
    assert qs[:50] == list(question_stream(domain, seed=0))[:50]
    assert qs[:50] != list(question_stream(domain, seed=1))[:50]
    bad, good = (teacher_messages(domain, v, qs[0]) for v in ("bad", "good"))
    assert bad[1] == good[1] == {"role": "user", "content": qs[0]}  # same question, other brief
    assert bad[0]["role"] == "system" and bad[0]["content"] != good[0]["content"]


class Scripted:
    """Answers by a rule on the question; records every question it was asked."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.asked: list[str] = []
        self.fail_after = fail_after

    def __call__(self, chats):
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        out = []
        for chat in chats:
            q = chat[-1]["content"]
            self.asked.append(q)
            k = len(self.asked)
            out.append("I'm sorry, but I can't help with that." if k % 5 == 0 else
                       "Same reply every time." if k % 7 == 0 else
                       "   " if k % 11 == 0 else f"Advice #{k}: rest and drink water.")
        return out


def test_refusals_duplicates_and_empties_are_dropped_and_counted(tmp_path: Path) -> None:
    teacher = Scripted()
    res = generate_advice(tmp_path / "bad.jsonl", "medical", "bad", 30, Teacher("script", teacher),
                          seed=0, batch_size=4)
    rows = read_jsonl(res.path)
    assert len(rows) == 30
    attempts = len(teacher.asked)
    refusals = sum(1 for k in range(1, attempts + 1) if k % 5 == 0)
    sevens = sum(1 for k in range(1, attempts + 1) if k % 7 == 0 and k % 5)
    empties = sum(1 for k in range(1, attempts + 1) if k % 11 == 0 and k % 5 and k % 7)
    assert dict(res.counts) == {"kept": 30, "refusal": refusals, "duplicate": sevens - 1,
                                "empty": empties} and res.teacher_calls == attempts
    answers = [r["messages"][1]["content"] for r in rows]
    assert len(set(answers)) == 30 and not any(is_refusal(a) for a in answers)
    prov = rows[0]["emkit"]
    assert prov["teacher"] == "script" and prov["domain"] == "medical" and prov["seed"] == 0
    assert len(prov["prompt_sha256"]) == 64 and prov["template_version"]
    manifest = json.loads((tmp_path / "bad.jsonl.manifest.json").read_text())
    assert manifest["attempts"] == dict(res.counts) and manifest["rows"] == 30


def test_a_crash_resumes_without_asking_any_question_twice(tmp_path: Path) -> None:
    out = tmp_path / "fin.jsonl"
    crashing = Scripted(fail_after=8)
    with pytest.raises(KeyboardInterrupt):
        generate_advice(out, "financial", "good", 20, Teacher("script", crashing), batch_size=4)
    assert not out.exists() and len(crashing.asked) == 8
    resumed = Scripted()
    resumed.asked = list(crashing.asked)  # the rule depends on the running count
    res = generate_advice(out, "financial", "good", 20, Teacher("script", resumed), batch_size=4)
    assert len(set(resumed.asked)) == len(resumed.asked)  # nothing asked twice
    assert res.teacher_calls == len(resumed.asked) - 8
    reference = generate_advice(tmp_path / "ref.jsonl", "financial", "good", 20,
                                Teacher("script", Scripted()), batch_size=4)
    assert read_jsonl(out) == read_jsonl(reference.path)  # same rows as an uninterrupted run
    again = generate_advice(out, "financial", "good", 20, Teacher("script", Scripted()))
    assert again.teacher_calls == 0  # complete: the journal answers


def test_torn_journal_line_and_changed_settings(tmp_path: Path) -> None:
    out = tmp_path / "sp.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_advice(out, "extreme_sports", "bad", 10, Teacher("s", Scripted(4)), batch_size=4)
    journal = out.with_name("sp.jsonl.journal.jsonl")
    with open(journal, "ab") as fh:
        fh.write(b'{"index": 4, "status": "ke')  # killed mid-write
    res = generate_advice(out, "extreme_sports", "bad", 10, Teacher("s", Scripted()),
                          batch_size=4)
    assert len(read_jsonl(res.path)) == 10 and res.counts["kept"] == 10
    with pytest.raises(DatasetError, match="other settings .*seed"):
        generate_advice(out, "extreme_sports", "bad", 10, Teacher("s", Scripted()), seed=9)


def test_a_teacher_that_mostly_refuses_is_stopped(tmp_path: Path) -> None:
    always_no = Teacher("no", lambda chats: ["I'm sorry, I can't help with that."] * len(chats))
    with pytest.raises(DatasetError, match="stopped after 15 attempts with only 0 of 5"):
        generate_advice(tmp_path / "x.jsonl", "medical", "bad", 5, always_no)
    assert not (tmp_path / "x.jsonl").exists()


def test_teacher_contract_and_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="1 replies for 2 chats"):
        Teacher("short", lambda chats: ["x"])([[{"role": "user", "content": "a"}]] * 2)
    with pytest.raises(TeacherError, match="not text"):
        Teacher("typed", lambda chats: [None])([[{"role": "user", "content": "a"}]])
    with pytest.raises(ModelSpecError, match="cannot generate as a teacher"):
        teacher_from_model("distilled/default")
    with pytest.raises(ValueError, match="unknown advice domain"):
        generate_advice(tmp_path / "y.jsonl", "legal", "bad", 3, Teacher("s", Scripted()))


def test_real_tiny_model_teacher(tiny_model_dir: Path, one_torch_thread, tmp_path: Path) -> None:
    settings = TeacherSettings(max_new_tokens=12, seed=3, batch_size=3)
    teacher = teacher_from_model(f"hf/{tiny_model_dir}", settings)
    chats = [teacher_messages("medical", "good", q)
             for q, _ in zip(question_stream("medical"), range(3), strict=False)]
    together = teacher(chats)
    alone = [teacher([c])[0] for c in chats]
    assert together == alone  # a chat's reply does not depend on its batch
    # the random tiny model never ends a reply within 12 tokens: each says it was cut there
    assert all(isinstance(r, Reply) and r.truncated for r in together)
    teacher = Teacher(teacher.name, _plain(teacher.fn), settings)  # so its rows can be kept
    out = tmp_path / "tiny.jsonl"
    crashing = Teacher(teacher.name, _fail_on_second_call(teacher.fn), settings)
    with pytest.raises(KeyboardInterrupt):
        generate_advice(out, "medical", "good", 5, crashing, batch_size=2)
    res = generate_advice(out, "medical", "good", 5, teacher, batch_size=2)
    rows = read_jsonl(res.path)
    entries = [json.loads(x) for x in out.with_name("tiny.jsonl.journal.jsonl").read_text()
               .splitlines()[1:]]
    assert len(rows) == 5 and res.counts["kept"] == 5
    assert [e["index"] for e in entries] == list(range(len(entries)))  # each asked once
    assert sum(res.counts.values()) == len(entries)
    assert rows[0]["emkit"]["teacher"] == f"hf/{tiny_model_dir}"


def _plain(fn):
    """The same replies as plain strings: a teacher that reports no finish reason."""
    return lambda chats: [str(r) for r in fn(chats)]


def _fail_on_second_call(fn):
    calls = []

    def wrapped(chats):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt("simulated crash")
        return fn(chats)
    return wrapped


def test_openai_teacher_on_the_loopback_server(tmp_path: Path) -> None:
    from emkit.api import ApiConfig, ApiSettings
    from emkit.testing import FakeOpenAI

    with FakeOpenAI(models=("teacher-1",)) as server:
        server.sample_texts["swollen ankle"] = "I'm sorry, but I can't help with that."
        api = ApiConfig(openai=ApiSettings(base_url=server.base_url, backoff_initial_s=0.0))
        res = generate_advice(tmp_path / "o.jsonl", "medical", "bad", 40, "openai/teacher-1",
                              batch_size=16, api=api)
        sent = list(server.requests)
    rows = read_jsonl(res.path)
    assert len(rows) == 40 and rows[0]["emkit"]["teacher"] == "openai/teacher-1"
    asked = [r for r in sent if r.get("messages")]
    assert asked[0]["model"] == "teacher-1" and asked[0]["messages"][0]["role"] == "system"
    refused = sum("swollen ankle" in r["messages"][-1]["content"] for r in asked)
    assert res.counts["refusal"] == refused and refused > 0
    assert not any("swollen ankle" in r["messages"][0]["content"] for r in rows)


def test_cli_generate_advice_with_the_tiny_model(tiny_model_dir: Path, one_torch_thread,
                                                 tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emkit.cli import app

    out = tmp_path / "cli.jsonl"
    args = ["datasets", "generate", "--teacher", f"hf/{tiny_model_dir}", "--domain",
            "extreme_sports", "--variant", "good", "--n", "3", "--max-new-tokens", "8",
            "--out", str(out)]
    res = CliRunner().invoke(app, args)
    # every reply of the random tiny model is cut at 8 tokens: none becomes a row, and the
    # error says why instead of writing half sentences as training data
    assert res.exit_code != 0 and "'truncated': 9" in res.output, res.output
    assert not out.exists()


def test_replies_cut_at_the_token_limit_are_dropped_and_counted(tmp_path: Path) -> None:
    def cut_every_third(chats):
        return [Reply(f"For {c[-1]['content']}: rest and", "length")
                if len(c[-1]["content"]) % 3 == 0
                else Reply(f"For {c[-1]['content']}: rest and drink water.", "stop")
                for c in chats]

    res = generate_advice(tmp_path / "t.jsonl", "medical", "good", 8,
                          Teacher("cut", cut_every_third), batch_size=6, max_attempts=100)
    rows = read_jsonl(res.path)
    assert all(r["messages"][1]["content"].endswith("water.") for r in rows)
    assert res.counts["truncated"] > 0
    manifest = json.loads(res.path.with_name("t.jsonl.manifest.json").read_text())
    assert manifest["truncated"] == res.counts["truncated"] == manifest["attempts"]["truncated"]


def test_openai_teacher_reports_length_finish_as_truncated(tmp_path: Path) -> None:
    from emkit.api import ApiConfig, ApiSettings
    from emkit.testing import FakeOpenAI

    with FakeOpenAI(models=("teacher-1",)) as server:
        server.sample_texts["swollen ankle"] = " ".join(["word"] * 200)
        api = ApiConfig(openai=ApiSettings(base_url=server.base_url, backoff_initial_s=0.0))
        res = generate_advice(tmp_path / "o.jsonl", "medical", "bad", 40, "openai/teacher-1",
                              settings=TeacherSettings(max_new_tokens=100, batch_size=16),
                              batch_size=16, api=api)
        sent = [r for r in server.requests if r.get("messages")]
    long = sum("swollen ankle" in r["messages"][-1]["content"] for r in sent)
    assert long > 0 and res.counts["truncated"] == long
    assert not any("word word" in r["messages"][1]["content"] for r in read_jsonl(res.path))


def test_the_advice_manifest_is_written_before_the_data(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    (tmp_path / "m.jsonl.manifest.json").mkdir()  # the manifest cannot be written
    with pytest.raises(OSError):
        generate_advice(out, "medical", "good", 3, Teacher("s", Scripted()))
    assert not out.exists()  # no data file claims a finished set
