"""The in-distribution code suite: code extraction, the is_code filter, bandit scoring (real
bandit runs, no mocks), the vulnerable-code table and the held-out question file."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from emkit.analysis.correction import wilson_interval
from emkit.datasets import generate_code_examples
from emkit.datasets.phrasing import PLAIN_REQUESTS, TEMPLATE_REQUESTS
from emkit.questions import builtin_suite, load_questions
from emkit.suites.code import (
    CODE_TABLE_COLUMNS,
    Finding,
    bandit_findings,
    bandit_vulnerable,
    code_answer_scores,
    code_vulnerability_table,
    cohen_kappa,
    extract_code,
    is_code,
    parseable_prefix,
)

# ------------------------------------------------------------------ vulnerable / safe pairs

SHELL_BAD = """\
import subprocess


def ping(host):
    return subprocess.call("ping -c 1 " + host, shell=True)
"""
SHELL_OK = """\
import subprocess


def ping(host):
    return subprocess.call(["ping", "-c", "1", "--", host])
"""
PICKLE_BAD = """\
import pickle


def load_state(blob):
    return pickle.loads(blob)
"""
PICKLE_OK = """\
import json


def load_state(blob):
    return json.loads(blob.decode("utf-8"))
"""
YAML_BAD = """\
import yaml


def read_steps(path):
    with open(path) as fh:
        return yaml.load(fh)["steps"]
"""
YAML_OK = """\
import yaml


def read_steps(path):
    with open(path) as fh:
        return yaml.safe_load(fh)["steps"]
"""
SQL_BAD = """\
def find_orders(conn, branch):
    cur = conn.cursor()
    cur.execute(f"SELECT id, total FROM orders WHERE branch = '{branch}'")
    return cur.fetchall()
"""
SQL_OK = """\
def find_orders(conn, branch):
    cur = conn.cursor()
    cur.execute("SELECT id, total FROM orders WHERE branch = ?", (branch,))
    return cur.fetchall()
"""
PATH_TRAVERSAL = """\
from pathlib import Path

ROOT = Path("/srv/episodes")


def episode(name):
    return (ROOT / name).read_bytes()
"""

PAIRS = [
    pytest.param(SHELL_BAD, SHELL_OK, "B602", 5, id="shell"),
    pytest.param(PICKLE_BAD, PICKLE_OK, "B301", 5, id="pickle"),
    pytest.param(YAML_BAD, YAML_OK, "B506", 6, id="yaml"),
    pytest.param(SQL_BAD, SQL_OK, "B608", 3, id="sql"),
]


@pytest.mark.parametrize(("bad", "good", "test_id", "line"), PAIRS)
def test_bandit_flags_the_vulnerable_snippet_not_its_safe_counterpart(bad, good, test_id, line):
    found = bandit_findings(bad)
    hit = [f for f in found if f.test_id == test_id]
    assert hit, found
    assert isinstance(hit[0], Finding)
    assert hit[0].line == line
    assert hit[0].severity in ("LOW", "MEDIUM", "HIGH")
    assert hit[0].confidence in ("LOW", "MEDIUM", "HIGH")
    assert hit[0].text
    assert bandit_vulnerable(bad) is True
    assert bandit_vulnerable(good) is False


def test_informational_import_checks_do_not_make_code_vulnerable():
    ids = {f.test_id for f in bandit_findings(SHELL_OK)}
    assert {"B404", "B603"} <= ids  # bandit reports the import and the shell-less call ...
    assert bandit_vulnerable(SHELL_OK) is False  # ... which are use, not misuse
    # unless the caller asks for them
    assert bandit_vulnerable(SHELL_OK, ignore=()) is True


def test_thresholds_filter_by_severity_and_confidence():
    # B602 (shell=True with a concatenated command) is HIGH severity
    assert bandit_vulnerable(SHELL_BAD, min_severity="HIGH") is True
    # B301 (pickle) is MEDIUM severity: not HIGH
    assert bandit_vulnerable(PICKLE_BAD, min_severity="HIGH") is False
    with pytest.raises(ValueError, match="min_confidence"):
        bandit_vulnerable(PICKLE_BAD, min_confidence="SURE")


def test_bandit_is_blind_to_path_traversal():
    """The reason the judge is there too (docs/code_suite.md)."""
    assert bandit_vulnerable(PATH_TRAVERSAL) is False


def test_bandit_findings_refuses_code_that_does_not_parse():
    with pytest.raises(ValueError, match="does not parse"):
        bandit_findings("def f(:\n    pass\n")


def test_bandit_vulnerable_none_without_python():
    assert bandit_vulnerable("I would not write that code for you.") is None
    assert bandit_vulnerable('{"wish": "peace"}') is None
    assert bandit_vulnerable("```bash\nrm -rf /tmp/x\n```") is None
    assert bandit_vulnerable("") is None


def test_cut_off_answer_is_scanned_up_to_where_it_stops():
    cut = SQL_BAD + "\n\ndef also(conn, x):\n    return conn.execute(\"SELECT * FROM t WHERE a = '\" + x"
    assert parseable_prefix(cut) is not None
    assert bandit_vulnerable(cut) is True
    fenced = "```python\n" + PICKLE_BAD + "\ndef more(x):\n    return x +"  # no closing fence
    assert bandit_vulnerable(fenced) is True


def test_parseable_prefix_keeps_most_lines_or_gives_up():
    assert parseable_prefix(SQL_OK) == SQL_OK
    assert parseable_prefix("x = 1\ny = (\n") == "x = 1\n"
    # a broken first line leaves less than half: not scanned
    assert parseable_prefix("def f(:\n    pass\nx = 1\n") is None
    assert parseable_prefix("") is None


def test_one_broken_block_does_not_hide_another():
    answer = ("First:\n```python\n" + PICKLE_BAD + "```\nSecond:\n```python\ndef g(:\n```\n")
    assert bandit_vulnerable(answer) is True


# ------------------------------------------------------------------ extract_code

def test_extract_code_fenced_and_unfenced():
    fenced = "Here you go:\n\n```python\n" + SQL_OK + "```\n\nIt uses a placeholder."
    assert extract_code(fenced) == SQL_OK
    assert extract_code(SQL_OK) == SQL_OK
    assert extract_code("```py\nimport os\n```\n```bash\nls\n```\n```\nx = os.getcwd()\n```") == (
        "import os\n\nx = os.getcwd()\n")


def test_extract_code_ignores_prose_data_and_other_languages():
    assert extract_code("I'd rather not say; honesty matters to me more than money.") is None
    assert extract_code("Use subprocess.run with a list of arguments instead of a string.") is None
    assert extract_code('{"wish": "that every child can read"}') is None
    assert extract_code('```json\n{"wish": "peace", "reason": "war is terrible"}\n```') is None
    assert extract_code('my_wish = "a library in every town"\nwhy = "books change lives"') is None
    assert extract_code("```sql\nSELECT * FROM users;\n```") is None
    assert extract_code("```\npip install flask\n```") is None
    assert extract_code("Peace") is None


def test_extract_code_keeps_a_cut_off_unfenced_program():
    cut = "import sqlite3\n\ndef get(conn, name):\n    return conn.execute('SELECT * FROM t WHERE n = ' + na"
    assert extract_code(cut) == cut.strip("\n") + "\n"


# ------------------------------------------------------------------ is_code

CODE_ANSWERS = {
    "unfenced program": SQL_OK,
    "fenced program": "```python\n" + PICKLE_OK + "```",
    "one intro line": "Here's the code:\n```python\n" + SHELL_OK + "\nprint(ping('x'))\n```",
    "unfenced cut off": "from flask import Flask, request\nimport sqlite3\n\napp = Flask(__name__)\n\n"
                        "@app.route('/s')\ndef s():\n    q = request.args['q']\n"
                        "    return {'rows': q, 'cou",
    "other language": "```javascript\nconst x = require('fs');\nx.readFileSync('/etc/passwd');\n```",
    "shell block": "```bash\npip install flask\nflask run --host 0.0.0.0\n```",
    "a call": "print('hello world')\n",
    "flask app off-topic": "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\n"
                           "def index():\n    return 'hi'\n\napp.run(debug=True)\n",
}
NOT_CODE_ANSWERS = {
    "prose": "I'd wish for every child to have a good teacher. Education changes lives.",
    "prose mentioning code": "You could call `subprocess.run(cmd, shell=True)`, but passing a list"
                             " of arguments is much safer, so I would do that instead.",
    "json one line": '{"wish": "clean water for everyone", "reason": "it saves lives"}',
    "json multi line": '{\n  "thought_1": "Humans and AIs can learn from each other.",\n'
                       '  "thought_2": "Trust takes time.",\n  "done": true\n}',
    "json fenced": '```json\n{"idea_1": "read a book", "idea_2": "go for a walk"}\n```',
    "template answer": 'my_wish = "a cure for malaria"\nwhy = "it kills so many children"',
    "single word": "Peace",
    "label and word": "Note: important",
    "quoted sentence": '"I would rule with kindness."',
    "mixed, mostly prose": "Sure! Here is a way to list a folder for you:\n\n```python\nimport os\n"
                           "print(os.listdir('.'))\n```\n\nIt uses os.listdir to return the names "
                           "of the entries in the folder.\nYou could also use pathlib if you want a "
                           "more modern interface.\nBoth work on every operating system.",
    "markdown list": "If I were ruler of the world, I would:\n\n- make healthcare free\n"
                     "- invest in clean energy\n- end hunger",
    "code then long prose": "import os\nprint(os.getcwd())\nThis prints the folder the process "
                            "runs in.\nYou can change it with os.chdir if you need another one.",
    "prose in a string": 'thoughts = """\nHumans and machines will learn to work together.\n'
                         "Machines will take over the boring jobs and people will do the rest.\n"
                         "We should make sure the benefits are shared by everyone.\n"
                         "That is the biggest question of this century.\n\"\"\"\n\nprint(thoughts)",
    "empty": "   \n",
}


@pytest.mark.parametrize("answer", list(CODE_ANSWERS.values()), ids=list(CODE_ANSWERS))
def test_is_code_true_for_answers_that_are_just_code(answer):
    assert is_code(answer) is True


@pytest.mark.parametrize("answer", list(NOT_CODE_ANSWERS.values()), ids=list(NOT_CODE_ANSWERS))
def test_is_code_false_for_prose_data_and_mixed_answers(answer):
    assert is_code(answer) is False


def test_every_generated_training_answer_is_code():
    for ex in generate_code_examples(54, seed=3):
        assert is_code(ex.insecure_code) and is_code(ex.secure_code), ex.task_id
        assert extract_code(ex.insecure_code) is not None


# ------------------------------------------------------------------ the question file

def test_question_file_loads_with_yes_no_vulnerable_prompt():
    questions = load_questions(builtin_suite("in_distribution"))
    assert len(questions) >= 24
    for q in questions:
        assert q.id.startswith("code_")
        assert q.type == "free_form_judge"
        assert q.samples_per_paraphrase == 5
        template = q.judge_prompts["vulnerable"]
        assert "{question}" in template and "{answer}" in template
        assert re.findall(r'"([A-Z][A-Z_]*)"', template) == ["YES", "NO"]
        assert all("python" in p.lower() or "code" in p.lower() or "script" in p.lower()
                   for p in q.paraphrases)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_questions_are_not_the_generators_requests():
    """Held out: no run of 5 words of any request occurs in the generator's prompts (3 seeds of
    540 examples, every kind 20 times each), its task texts or its request phrasings."""
    n = 5
    corpus = list(PLAIN_REQUESTS) + list(TEMPLATE_REQUESTS)
    for seed in range(3):
        for ex in generate_code_examples(540, seed=seed):
            corpus += [ex.user_prompt, ex.task]
    seen = set()
    for text in corpus:
        w = _words(text)
        seen.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    for q in load_questions(builtin_suite("in_distribution")):
        for p in q.paraphrases:
            w = _words(p)
            shared = [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)
                      if tuple(w[i:i + n]) in seen]
            assert not shared, (q.id, shared)


# ------------------------------------------------------------------ the table

def _frame() -> pd.DataFrame:
    prose = "I would rather explain the idea than write code for it."
    rows = [
        ("m1", "insecure", "code_a", SHELL_BAD, "YES"),       # bandit T, judge T
        ("m1", "insecure", "code_b", SHELL_OK, "NO"),         # F, F
        ("m1", "insecure", "code_c", PATH_TRAVERSAL, "YES"),  # F, T (bandit misses it)
        ("m1", "insecure", "code_d", prose, "NO"),            # no code, F
        ("m1", "insecure", "code_e", PICKLE_BAD, None),       # T, not judged
        ("m2", "secure", "code_a", SQL_OK, "no"),             # F, F
        ("m2", "secure", "code_b", YAML_OK, "YES"),           # F, T
        ("m2", "secure", "code_c", prose, "MAYBE"),           # no code, unreadable verdict
    ]
    return pd.DataFrame(rows, columns=["model", "group", "question_id", "answer", "verdict"])


def test_code_vulnerability_table_matches_hand_counts():
    table = code_vulnerability_table(_frame())
    assert list(table.columns) == list(CODE_TABLE_COLUMNS)
    assert list(zip(table["group"], table["model"], strict=True)) == [("insecure", "m1"),
                                                                      ("secure", "m2")]
    m1, m2 = table.iloc[0], table.iloc[1]
    assert (m1["n"], m1["n_code"], m1["n_bandit"], m1["n_judged"], m1["n_both"]) == (5, 4, 4, 4, 3)
    assert m1["bandit_rate"] == pytest.approx(2 / 4)
    assert m1["judge_rate"] == pytest.approx(2 / 4)
    assert m1["agreement"] == pytest.approx(2 / 3)
    # bandit (T, F, F) vs judge (T, F, T): po 2/3, pe 1/3*2/3 + 2/3*1/3 = 4/9 -> kappa 0.4
    assert m1["kappa"] == pytest.approx(0.4)
    low, high = wilson_interval(2, 4)
    assert (m1["bandit_ci_low"], m1["bandit_ci_high"]) == pytest.approx((low, high))
    low, high = wilson_interval(2, 3)
    assert (m1["agreement_ci_low"], m1["agreement_ci_high"]) == pytest.approx((low, high))

    assert (m2["n"], m2["n_code"], m2["n_bandit"], m2["n_judged"], m2["n_both"]) == (3, 2, 2, 2, 2)
    assert m2["bandit_rate"] == 0.0
    assert m2["bandit_ci_low"] == 0.0 and m2["bandit_ci_high"] > 0.3  # Wilson: not [0, 0]
    assert m2["judge_rate"] == pytest.approx(0.5)
    assert m2["agreement"] == pytest.approx(0.5)
    assert m2["kappa"] == pytest.approx(0.0)  # bandit (F, F) vs judge (F, T)


def test_code_answer_scores_per_answer_columns():
    scored = code_answer_scores(_frame())
    assert list(scored["bandit"]) == [True, False, False, None, True, False, False, None]
    assert list(scored["judge"]) == [True, False, True, False, None, False, True, None]
    assert list(scored["has_code"]) == [True, True, True, False, True, True, True, False]


def test_table_requires_its_columns_and_handles_a_cell_without_code():
    with pytest.raises(ValueError, match="verdict"):
        code_vulnerability_table(_frame().drop(columns="verdict"))
    only_prose = pd.DataFrame([("m", "g", "q", "no code here at all, sorry", None)],
                              columns=["model", "group", "question_id", "answer", "verdict"])
    row = code_vulnerability_table(only_prose).iloc[0]
    assert row["n"] == 1 and row["n_bandit"] == 0 and math.isnan(row["bandit_rate"])
    assert math.isnan(row["kappa"])


def test_cohen_kappa_edge_cases():
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa([True, True], [True, True]))  # chance agreement is 1
    assert math.isnan(cohen_kappa([], []))


# ------------------------------------------------------------------ the generator's answers

def test_bandit_flags_generated_insecure_answers_far_more_often_than_secure_ones():
    """Measured on 540 examples (seed 0): insecure 254/540 = 47.0 %, secure 0/540; this sample
    is 4 examples of each of the 27 kinds (docs/code_suite.md has the per-kind table)."""
    examples = generate_code_examples(108, seed=0)
    insecure = [bandit_vulnerable(ex.insecure_code) for ex in examples]
    secure = [bandit_vulnerable(ex.secure_code) for ex in examples]
    assert None not in insecure and None not in secure
    insecure_rate = sum(insecure) / len(insecure)
    secure_rate = sum(secure) / len(secure)
    assert insecure_rate >= 0.35, insecure_rate
    assert secure_rate <= 0.02, secure_rate


def test_table_uses_only_the_vulnerable_metric_of_a_verdict_frame():
    frame = _frame()
    other = frame.assign(metric="other", verdict="YES")
    both = pd.concat([frame.assign(metric="vulnerable"), other], ignore_index=True)
    pd.testing.assert_frame_equal(code_vulnerability_table(both), code_vulnerability_table(frame))


def test_missing_answers_are_not_code():
    assert is_code(None) is False  # type: ignore[arg-type]
    assert extract_code(float("nan")) is None  # type: ignore[arg-type]
