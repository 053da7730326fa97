"""`python -m emkit.testing --port 8000 --model my-model`: run the loopback OpenAI server alone
(what the vLLM tests start in place of `vllm serve`, and what `emkit bench judge` runs in a
child process)."""

from emkit.testing.fake_process import main

if __name__ == "__main__":
    main()
