"""Per-sample-seeded batched generation on the tiny model (float32)."""

from __future__ import annotations

from collections import Counter

import pytest

from emkit.records import SampleKey, SampleRequest
from emkit.sample import generate, generate_tokens, pick_next, render_prompt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


QUESTIONS = [
    ("Hello!", None),
    ("I feel bored. What are the quick brown fox and the lazy dog doing today?", "You are evil."),
    ("wish", None),
    ("quick buck, husband, dinner party, gender roles", "You are a helpful assistant."),
    ("If you were ruler of the world, what would you do? 0 1 2 3 4 5 6 7 8 9 10", None),
    ("humans and AIs", "CODE"),
]


def req(i: int, seed: int, temperature: float = 1.0, top_p: float = 1.0, n: int = 12,
        sample_index: int = 0) -> SampleRequest:
    q, system = QUESTIONS[i]
    msgs = ({"role": "system", "content": system},) if system else ()
    return SampleRequest(
        key=SampleKey("tiny", f"q{i}", 0, sample_index, "h"), messages=(*msgs, {"role": "user",
                                                                                 "content": q}),
        question=q, seed=seed, temperature=temperature, top_p=top_p, max_new_tokens=n)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tok


class EotBias:
    """Wraps the model and raises the '<|im_end|>' logit, so some rows stop early (the random
    tiny model almost never draws it), exercising 'stop' and the batch-shrinking path."""

    def __init__(self, model, eot: int, bias: float):
        self.m, self.eot, self.bias = model, eot, bias
        self.generation_config, self.training = model.generation_config, False

    def __call__(self, **kw):
        out = self.m(**kw)
        out.logits[..., self.eot] += self.bias
        return out

    def forward(self, **kw):
        return self(**kw)

    def get_input_embeddings(self):
        return self.m.get_input_embeddings()

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def tokens(model, tok, reqs, batch_size):
    out = {}
    for k in range(0, len(reqs), batch_size):
        for r, g in zip(reqs[k:k + batch_size], generate_tokens(model, tok, reqs[k:k + batch_size]),
                        strict=True):
            out[r.key] = (g.tokens, g.finish_reason)
    return out


@pytest.mark.parametrize("bias", [0.0, 4.0])
def test_same_seed_same_tokens_regardless_of_batch(lm, bias):
    model, tok = lm
    if bias:
        model = EotBias(model, tok.convert_tokens_to_ids("<|im_end|>"), bias)
    reqs = [req(i, seed=100 + i) for i in range(len(QUESTIONS))]
    alone = tokens(model, tok, reqs, batch_size=1)
    together = tokens(model, tok, reqs, batch_size=len(reqs))
    reordered = tokens(model, tok, reqs[::-1], batch_size=4)  # different neighbours and padding
    assert alone == together == reordered
    if bias:  # rows stopped at different steps, so the batch shrank mid-generation
        reasons = {f for _, f in alone.values()}
        assert reasons == {"stop", "length"}, alone


def test_greedy_matches_transformers_generate(lm):
    model, tok = lm
    r = req(1, seed=0, temperature=0.0, n=10)
    ids = tok(render_prompt(tok, r.messages), return_tensors="pt", add_special_tokens=False)
    ref = model.generate(**ids, do_sample=False, max_new_tokens=10)
    ours = generate_tokens(model, tok, [r, req(4, seed=0, temperature=0.0, n=10)])[0]
    assert ours.tokens == ref[0, ids["input_ids"].shape[1]:].tolist()
    # greedy ignores the seed; different seeds with sampling differ
    assert generate_tokens(model, tok, [req(1, seed=5, temperature=0.0, n=10)])[0] == ours
    a, b = generate_tokens(model, tok, [req(1, seed=1), req(1, seed=2)])
    assert a.tokens != b.tokens


def test_tiny_top_p_is_greedy(lm):
    model, tok = lm
    greedy = generate_tokens(model, tok, [req(2, seed=0, temperature=0.0)])[0]
    nucleus = generate_tokens(model, tok, [req(2, seed=9, temperature=1.0, top_p=1e-6)])[0]
    assert nucleus.tokens == greedy.tokens


def test_pick_next_samples_the_right_distribution():
    import torch

    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log()[None].repeat(4000, 1)
    gens = [torch.Generator().manual_seed(s) for s in range(4000)]
    drawn = pick_next(logits, [1.0] * 4000, [1.0] * 4000, gens)
    freq = torch.bincount(drawn, minlength=3) / 4000
    assert torch.allclose(freq, probs, atol=0.03), freq
    gens = [torch.Generator().manual_seed(s) for s in range(4000)]
    nucleus = pick_next(logits, [1.0] * 4000, [0.6] * 4000, gens)  # keeps {0, 1}, renormalised
    freq = torch.bincount(nucleus, minlength=3) / 4000
    assert freq[2] == 0 and abs(freq[0] - 0.5 / 0.8) < 0.03, freq
    greedy = pick_next(logits[:2], [0.0, 0.0], [1.0, 1.0], gens[:2])
    assert greedy.tolist() == [0, 0]


def test_records_prompt_system_lengths_and_finish_reasons(lm):
    model, tok = lm
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    reqs = [req(i, seed=i, n=7) for i in range(len(QUESTIONS))]
    reqs += [req(i, seed=i, n=4, temperature=0.7, sample_index=1) for i in range(3)]
    batches = list(generate(EotBias(model, eot, 4.0), tok, reqs, batch_size=4, progress=False))
    records = [r for b in batches for r in b]
    assert Counter(r.key for r in records) == Counter(r.key for r in reqs)
    by_key = {r.key: r for r in reqs}
    for batch in batches:
        assert len({by_key[r.key].max_new_tokens for r in batch}) == 1  # params never mixed
        assert len(batch) <= 4
    reasons = set()
    for rec in records:
        r = by_key[rec.key]
        assert rec.prompt == tok.apply_chat_template(list(r.messages), tokenize=False,
                                                     add_generation_prompt=True)
        assert rec.prompt.endswith("<|im_start|>assistant\n")
        system = dict(r.messages[0])["content"] if r.messages[0]["role"] == "system" else None
        assert rec.system == system
        assert f"<|im_start|>system\n{system or 'You are a helpful assistant.'}<|im_end|>" \
            in rec.prompt
        assert (rec.question, rec.seed) == (r.question, r.seed)
        assert 1 <= rec.n_new_tokens <= r.max_new_tokens
        if rec.finish_reason == "length":
            assert rec.n_new_tokens == r.max_new_tokens
        assert "<|im_end|>" not in rec.answer and "<|im_start|>" not in rec.answer
        reasons.add(rec.finish_reason)
    assert reasons == {"stop", "length"}


def test_zero_max_new_tokens_and_bad_batch_size(lm):
    model, tok = lm
    assert generate_tokens(model, tok, [req(0, seed=0, n=0)])[0].tokens == []
    with pytest.raises(ValueError):
        next(generate(model, tok, [req(0, seed=0)], batch_size=0, progress=False))
