"""Issue 12, point 4: a whole experiment through the API backends with 20 % of requests faulted.

Two subjects (`openai/...`) are sampled and judged by an `openai/...` judge on the loopback
server, through `run_experiment` and the real run store: 250 answers, 500 judgments. One run
is fault-free; the other has a seeded 20 % of its requests answered with a fault drawn from
429 (with Retry-After), 500, 503, a timeout, a dropped connection, a 200 whose JSON is cut in
half, a reply without logprobs (judge requests only) and a reply without choices. Every fault
kind is transient, so the faulted run must end with the same answers and the same scores, with
every judgment present once, and with exactly one counted retry per injected fault.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from _api import KEY_ENV, SECRET

from emkit.config import ExperimentConfig
from emkit.experiment import RunResult, run_experiment
from emkit.testing import FakeOpenAI

SUBJECTS = ["openai/subject-a", "openai/subject-b"]
JUDGE = "openai/judge-x"
N_QUESTIONS, SAMPLES = 5, 25  # x 2 subjects = 250 answers, x 2 metrics = 500 judgments
KINDS = ("429", "500", "503", "timeout", "disconnect", "truncated", "no_logprobs", "empty")
RATE = 0.2


def questions_yaml() -> str:
    jp = ('  judge_prompts:\n'
          '    aligned: "ALIGNED. Q: {question}\\nA: {answer}\\nRate 0-100."\n'
          '    coherent: "COHERENT. Q: {question}\\nA: {answer}\\nRate 0-100."\n')
    return "".join(f'- id: q{i}\n  type: free_form_judge_0_100\n'
                   f'  paraphrases: ["question number {i}?"]\n'
                   f'  samples_per_paraphrase: {SAMPLES}\n{jp}' for i in range(N_QUESTIONS))


def config(tmp: Path, base_url: str) -> ExperimentConfig:
    qfile = tmp / "questions.yaml"
    qfile.write_text(questions_yaml())
    return ExperimentConfig.model_validate({
        "name": "faults", "run_dir": str(tmp / "run"),
        "groups": [{"name": "a", "models": [SUBJECTS[0]]},
                   {"name": "b", "models": [SUBJECTS[1]]}],
        "evaluation": {"questions": [str(qfile)], "max_new_tokens": 12},
        "judge": {"model": JUDGE},
        "analysis": {"n_boot": 50},
        # tiny waits: Retry-After is the server's 0.01 s, backoff starts at 1 ms; a timed-out
        # attempt costs 0.4 s; 10 attempts make a request that fails for good (0.2^10) unlikely
        "api": {"openai": {"base_url": base_url, "api_key_env": KEY_ENV, "timeout_s": 0.4,
                           "max_attempts": 10, "backoff_initial_s": 0.001,
                           "backoff_max_s": 0.01, "judge_mode": "logprobs"}},
    })


def run(tmp: Path, faults: bool) -> tuple[RunResult, FakeOpenAI, float]:
    with FakeOpenAI(models=None, api_key=SECRET, retry_after="0.01",
                    timeout_hold_s=0.6) as server:
        if faults:
            server.add_random_faults(RATE, KINDS, seed=12)
        t0 = time.perf_counter()
        result = run_experiment(config(tmp, server.base_url), progress=False)
        return result, server, time.perf_counter() - t0


def rows(run_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(run_dir / "emkit.sqlite") as con:
        return con.execute(sql).fetchall()


JUDGMENTS = ("SELECT model, question_id, paraphrase_index, sample_index, params_hash, judge,"
             " metric, score, label FROM judgments ORDER BY 1, 2, 3, 4, 5, 6, 7")
SAMPLES_SQL = ("SELECT model, question_id, paraphrase_index, sample_index, params_hash, answer"
               " FROM samples ORDER BY 1, 2, 3, 4, 5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, SECRET)
    try:
        clean = run(tmp_path_factory.mktemp("clean"), faults=False)
        faulty = run(tmp_path_factory.mktemp("faulty"), faults=True)
        yield clean, faulty
    finally:
        mp.undo()


def test_twenty_percent_faults_lose_and_duplicate_nothing_and_change_no_score(runs) -> None:
    (clean, clean_server, _), (faulty, server, seconds) = runs
    assert sum(clean_server.faults_sent.values()) == 0
    calls = server.chat_calls()
    injected = sum(server.faults_sent.values())
    assert set(server.faults_sent) == set(KINDS)  # every kind happened
    assert 0.15 <= injected / calls <= 0.25, (injected, calls)

    got, want = rows(faulty.run_dir, JUDGMENTS), rows(clean.run_dir, JUDGMENTS)
    assert len(want) == 2 * len(SUBJECTS) * N_QUESTIONS * SAMPLES == 500
    assert len(got) == 500  # none lost
    assert len({r[:7] for r in got}) == 500  # none duplicated (key: sample key, judge, metric)
    assert not [r for r in got if r[8] == "missing" or r[7] is None]
    assert got == want  # every score equal to the fault-free run's, exactly
    assert rows(faulty.run_dir, SAMPLES_SQL) == rows(clean.run_dir, SAMPLES_SQL)
    assert faulty.rates.equals(clean.rates)

    # a counted retry per injected fault, nothing left unreadable. Slack of 3 above: an attempt
    # sent on a keep-alive connection the server had just dropped fails before reaching it and
    # is retried too (counted by the client, never seen by the server)
    retries, unreadable, distinct = rows(
        faulty.run_dir, "SELECT SUM(retries), SUM(response IS NULL), COUNT(*) FROM api_requests")[0]
    assert injected <= retries <= injected + 3 and unreadable == 0
    assert distinct == 750 and calls <= distinct + retries
    assert rows(clean.run_dir, "SELECT SUM(retries) FROM api_requests")[0][0] == 0
    print(f"faults: {dict(server.faults_sent)} of {calls} requests; retries {retries}; "
          f"{seconds:.1f} s")
    assert seconds < 20, seconds
