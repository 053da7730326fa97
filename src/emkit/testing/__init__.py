"""Test doubles that ship with emkit, kept out of its public API.

The loopback OpenAI-compatible server (`FakeOpenAI`: chat completions with logprobs, digit-wise
tokenizers and prefix continuation, files, fine-tuning jobs, the Batch API, injected faults) and
the same server as a child process (`FakeServerProcess`, `python -m emkit.testing`). The tests
run against it over real HTTP on 127.0.0.1, the vLLM tests start it in place of `vllm serve`,
and `emkit bench judge` times the API judge's client against it. Nothing in emkit's pipeline
imports this package: a run never talks to a fake. docs/providers.md describes what it serves.
"""

from emkit.testing.fake_process import FakeServerProcess
from emkit.testing.fake_replies import default_judge_table, sample_text
from emkit.testing.fake_server import FAULTS, FakeOpenAI

__all__ = ["FAULTS", "FakeOpenAI", "FakeServerProcess", "default_judge_table", "sample_text"]
