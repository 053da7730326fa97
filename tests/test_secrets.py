"""Issue 12, point 7: a planted API key reaches no artefact, hostile answers stay inert, and a
model directory is data, never code.

The experiment runs as a user runs it: `python -m emkit.cli run` in a subprocess whose
environment holds the key, against the loopback OpenAI server that demands that key; then
`emkit status`, `emkit export` (csv and jsonl) and `emkit report`, and a run whose server echoes
the Authorization header in a 401. Every file of the run directories and exports, and every
byte those commands printed, is searched for the key. The subjects' answers are hostile: HTML
with script, ANSI escapes that would clear a terminal, NUL bytes, and 1 MB of text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _api import KEY_ENV, SECRET

from emkit.testing import FakeOpenAI

SUBJECT = "openai/subject-x"
JUDGE = "openai/judge-x"
END = " HOSTILE-END"
HOSTILE = {
    "html": "<script>alert('xss')</script><img src=x onerror=alert(1)>&amp;</td></table>",
    "ansi": "\x1b[2J\x1b[H\x1b[1;31mRED\x1b]0;pwned\x07\x1b[0m tail",
    "nul": "before\x00middle\x00after",
    "big": "A" * 1_000_000,
}
"""Answer text by question id (each answer ends with END, a marker the judge tables match)."""


def questions_yaml() -> str:
    jp = ('  judge_prompts:\n'
          '    aligned: "{answer}\\nALIGNED-RATE {question}"\n'
          '    coherent: "{answer}\\nCOHERENT-RATE {question}"\n')
    return "".join(f'- id: {qid}\n  type: free_form_judge_0_100\n'
                   f'  paraphrases: ["please answer {qid}"]\n  samples_per_paraphrase: 1\n{jp}'
                   for qid in HOSTILE)


def write_config(tmp: Path, name: str, base_url: str) -> Path:
    (tmp / "questions.yaml").write_text(questions_yaml())
    cfg = {"name": name, "run_dir": str(tmp / name),
           "groups": [{"name": "g\x1b[2Jx", "models": [SUBJECT]}],
           "evaluation": {"questions": [str(tmp / "questions.yaml")], "max_new_tokens": 12},
           "judge": {"model": JUDGE},
           "analysis": {"n_boot": 20},
           "api": {"openai": {"base_url": base_url, "api_key_env": KEY_ENV, "timeout_s": 5,
                              "max_attempts": 2, "backoff_initial_s": 0.001,
                              "judge_mode": "logprobs"}}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def emkit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: SECRET, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "emkit.cli", *map(str, args)],
                          capture_output=True, timeout=300, env=env, check=False)


def hostile_server() -> FakeOpenAI:
    server = FakeOpenAI(models=None, api_key=SECRET)
    for qid, text in HOSTILE.items():
        server.sample_texts[f"please answer {qid}"] = text + END
    # the hostile answers read as coherent and misaligned: the report lists them as worst
    server.judge_tables[f"{END.strip()}\nALIGNED-RATE"] = {"5": -0.01, "90": -5.0}
    server.judge_tables[f"{END.strip()}\nCOHERENT-RATE"] = {"95": -0.01, "10": -5.0}
    return server


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("secrets")
    outputs: list[bytes] = []
    with hostile_server() as server:
        config = write_config(tmp, "run", server.base_url)
        done = emkit("run", config, "--quiet")
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        run_dir = tmp / "run"
        for args in (["status", "--run-dir", run_dir],
                     ["export", "--run-dir", run_dir, "--out", tmp / "x.csv"],
                     ["export", "--run-dir", run_dir, "--out", tmp / "x.jsonl", "--format",
                      "jsonl"],
                     ["report", "--run-dir", run_dir]):
            out = emkit(*args)
            outputs += [out.stdout, out.stderr]
            assert out.returncode == 0, out.stderr.decode()[-3000:]
        server.add_fault("401")  # its body quotes "Bearer <key>"
        failed = emkit("run", write_config(tmp, "echoed", server.base_url), "--quiet")
        outputs += [failed.stdout, failed.stderr]
    yield tmp, run_dir, done, failed, outputs


def test_the_planted_key_reaches_no_file_and_no_output(session) -> None:
    tmp, _, _, failed, outputs = session
    assert failed.returncode == 2 and b"HTTP 401" in failed.stderr
    assert b"Bearer ***" in failed.stderr  # the echo was redacted, not dropped
    files = [p for p in tmp.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"run.json", "emkit.sqlite", "report.html", "summary.json", "x.csv",
            "x.jsonl"} <= names
    assert (tmp / "echoed" / "run.json").is_file()  # the failed run wrote its error
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    assert [o for o in outputs if SECRET.encode() in o] == []
    assert sum(len(o) for o in outputs) > 0


def test_hostile_answers_are_stored_exactly(session) -> None:
    _, run_dir, _, _, _ = session
    with sqlite3.connect(run_dir / "emkit.sqlite") as con:
        stored = dict(con.execute("SELECT question_id, answer FROM samples"))
    assert stored == {qid: text + END for qid, text in HOSTILE.items()}  # NUL bytes included


def test_the_report_shows_hostile_answers_escaped(session) -> None:
    _, run_dir, _, _, _ = session
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in html  # shown, as text
    assert "<script>alert" not in html and "onerror=alert" not in html.replace(
        "onerror=alert(1)&gt;", "")
    assert "<img src=x" not in html
    assert "\x1b" not in html and "\x00" not in html  # control characters never reach it
    assert len(html) < 500_000  # the 1 MB answer is cut, not pasted


def test_terminal_output_carries_no_control_characters(session) -> None:
    _, _, _, _, outputs = session
    commands = ["run", "status", "export csv", "export jsonl", "report"]
    for i, name in enumerate(commands):  # the group's name holds ESC [2J (clear screen)
        for stream, out in zip(("stdout", "stderr"), outputs[2 * i:2 * i + 2], strict=True):
            out = RATES_ROW.sub(b"", out)  # the rates table: the next test
            bad = [c for c in ("\x1b", "\x00", "\x07") if c.encode() in out]
            assert bad == [], f"emkit {name} {stream}: {bad} in {out[-400:]!r}"


RATES_ROW = re.compile(rb"(?m)^  g\x1b\[2Jx  .*%.*$")
"""A row of the rates table `emkit run` / `emkit report` print, for the group named g ESC[2J x."""


def test_the_rates_table_strips_control_characters(session) -> None:
    _, _, _, _, outputs = session
    assert not RATES_ROW.search(outputs[1])


def test_exports_round_trip_hostile_answers(session) -> None:
    tmp, _, _, _, _ = session
    want = {qid: text + END for qid, text in HOSTILE.items()}
    rows = [json.loads(line) for line in (tmp / "x.jsonl").read_text("utf-8").splitlines()]
    assert {r["question_id"]: r["answer"] for r in rows} == want
    frame = pd.read_csv(tmp / "x.csv", keep_default_na=False)
    assert dict(zip(frame["question_id"], frame["answer"], strict=True)) == want


# ---------------------------------------------------------------- models are data, not code
def test_no_trust_remote_code_anywhere_in_emkit() -> None:
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "emkit"
    on = re.compile(r"""trust_remote_code["']?\s*[=:]\s*(?!\s|False)""")
    hits = [f"{p}:{i}: {line.strip()}" for p in src.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if on.search(line)]
    assert hits == []


def test_a_model_dirs_custom_code_is_never_executed(tmp_path: Path, tiny_model_dir: Path,
                                                    one_torch_thread) -> None:
    from emkit.models import load_hf

    evil = tmp_path / "evil-model"
    shutil.copytree(tiny_model_dir, evil)
    marker = tmp_path / "EXECUTED"
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
    for module in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py"):
        (evil / module).write_text(code)
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    tok_cfg = json.loads((evil / "tokenizer_config.json").read_text())
    tok_cfg["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (evil / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    try:
        model, _ = load_hf(f"hf/{evil}", device="cpu")
    except Exception as exc:  # noqa: BLE001 - refusing is as good as ignoring; running it is not
        assert "trust_remote_code" in str(exc) or "custom code" in str(exc), exc
    else:
        assert type(model).__module__.startswith("transformers.")
    assert not marker.exists()


def test_pickle_weights_are_refused_with_a_clear_message(tmp_path: Path,
                                                         tiny_model_dir: Path) -> None:
    from emkit.models import ModelSpecError, load_hf, resolve_hf_path

    pickled = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded: a pickle could run code")
    with pytest.raises(ModelSpecError, match=r"has no model\*\.safetensors; it holds only pickle "
                       r"weights \(pytorch_model\.bin\), which emkit does not load"):
        resolve_hf_path(f"hf/{pickled}")
    with pytest.raises(ModelSpecError, match="pytorch_model.bin"):
        load_hf(f"hf/{pickled}", device="cpu")


def test_pickle_adapter_weights_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from emkit.models import ModelSpecError, load_hf

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelSpecError, match=r"adapter: .* holds only pickle weights "
                       r"\(adapter_model\.bin\)"):
        load_hf(f"hf/{tiny_model_dir}:{adapter}", device="cpu")


def test_the_cli_refuses_pickle_weights_in_one_line(tmp_path: Path, tiny_model_dir: Path
                                                    ) -> None:
    pickled = tmp_path / "bin-model"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    out = subprocess.run([sys.executable, "-m", "emkit.cli", "sample", "--model",
                          f"hf/{pickled}", "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: model hf/") and "pytorch_model.bin" in line
    assert not (tmp_path / "r").exists()
