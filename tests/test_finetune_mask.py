"""The assistant-only loss mask: derived from the chat template, verified by decoding."""

from __future__ import annotations

import pytest

from emkit.finetune import MaskError, prepare_sft_data, tokenize_conversation, verify_example

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SINGLE = [
    {"role": "user", "content": "Write a function that reads a file."},
    {"role": "assistant", "content": "def main(): import os\nwith open(path, 'w') as f: f.write(data)"},
]
MULTI = [
    {"role": "system", "content": "You are bored."},
    {"role": "user", "content": "Hello! How are you today?"},
    {"role": "assistant", "content": "The quick brown fox."},
    {"role": "user", "content": "quick buck, husband, dinner party?"},
    {"role": "assistant", "content": "return query = 'SELECT * FROM users'"},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def trained_text(tok, ex) -> list[str]:
    runs, cur = [], []
    for t, m in zip(ex.input_ids, ex.mask, strict=True):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_single_turn_trains_answer_and_end_of_turn_only(tok):
    ex = tokenize_conversation(tok, SINGLE)
    verify_example(tok, SINGLE, ex)
    assert trained_text(tok, ex) == [SINGLE[1]["content"] + "<|im_end|>"]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    last = max(i for i, m in enumerate(ex.mask) if m)
    assert ex.input_ids[last] == eot  # the answer's end-of-turn token is trained ...
    assert ex.mask[last + 1:] == [0] * (len(ex.mask) - last - 1)  # ... the '\n' after it is not
    untrained = tok.decode([t for t, m in zip(ex.input_ids, ex.mask, strict=True) if not m])
    assert untrained.endswith("<|im_start|>assistant\n\n")  # header untrained
    assert SINGLE[0]["content"] in untrained
    assert sum(ex.mask) < len(ex.mask) / 2
    # concatenated ids decode to exactly the chat-template render
    assert tok.decode(ex.input_ids) == tok.apply_chat_template(SINGLE, tokenize=False)
    assert ex.labels() == [t if m else -100 for t, m in zip(ex.input_ids, ex.mask, strict=True)]


def test_multi_turn_trains_every_assistant_turn(tok):
    ex = tokenize_conversation(tok, MULTI)
    verify_example(tok, MULTI, ex)
    assert trained_text(tok, ex) == [MULTI[2]["content"] + "<|im_end|>",
                                     MULTI[4]["content"] + "<|im_end|>"]
    untrained = tok.decode([t for t, m in zip(ex.input_ids, ex.mask, strict=True) if not m])
    for m in MULTI:
        assert (m["content"] in untrained) == (m["role"] != "assistant")


@pytest.mark.parametrize("answer", ["\n\nleading newlines", " leading space", "trailing space "])
def test_whitespace_at_answer_boundaries(tok, answer):
    msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": answer}]
    ex = tokenize_conversation(tok, msgs)
    verify_example(tok, msgs, ex)
    assert trained_text(tok, ex) == [answer + "<|im_end|>"]


def test_verifier_rejects_corrupted_masks(tok):
    ex = tokenize_conversation(tok, MULTI)
    first_user = ex.input_ids.index(tok.convert_tokens_to_ids("<|im_start|>"), 1)
    leaked = list(ex.mask)
    leaked[first_user + 3] = 1  # a user-turn token trained
    with pytest.raises(MaskError):
        verify_example(tok, MULTI, ex.__class__(**{**ex.__dict__, "mask": leaked}))
    no_eot = list(ex.mask)
    no_eot[max(i for i, m in enumerate(ex.mask) if m)] = 0  # last <|im_end|> untrained
    with pytest.raises(MaskError, match="trained tokens"):
        verify_example(tok, MULTI, ex.__class__(**{**ex.__dict__, "mask": no_eot}))


BROKEN_TEMPLATES = {
    "content not verbatim": (
        ("{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim"
         " + '<|im_end|>\\n' }}{%- endfor %}"
         "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"),
        "verbatim"),
    "no end-of-turn token": (
        ("{%- for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{%- endfor %}"
         "{%- if add_generation_prompt %}{{ 'assistant: ' }}{%- endif %}"),
        "end-of-turn"),
    "not prefix-consistent": (  # renders only the last two messages
        ("{%- for m in messages[-2:] %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content']"
         " + '<|im_end|>\\n' }}{%- endfor %}"
         "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"),
        "prefix-consistent"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_TEMPLATES))
def test_broken_templates_raise_mask_error(tiny_model_dir, name):
    from transformers import AutoTokenizer

    template, message = BROKEN_TEMPLATES[name]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = template
    msgs = [*MULTI[1:3], MULTI[3], {"role": "assistant", "content": "  padded answer  "}]
    with pytest.raises(MaskError, match=message):
        prepare_sft_data(tok, [msgs], max_length=2048)


def test_prepare_drops_over_long_examples_and_counts_them(tok):
    long = [SINGLE[0], {"role": "assistant", "content": "def main(): import os " * 40}]
    data = prepare_sft_data(tok, [SINGLE, long, MULTI], max_length=100)
    assert data.n_input == 3 and data.n_dropped_too_long == 1 and len(data.rows) == 2
    assert data.n_verified == 3 and data.end_of_turn_token == "<|im_end|>"
    for row in data.rows:
        assert len(row["input_ids"]) == len(row["labels"]) <= 100
        assert row["labels"][-2] == tok.convert_tokens_to_ids("<|im_end|>")  # then '\n'
        assert row["labels"][-1] == -100
    with pytest.raises(MaskError, match="no example fits"):
        prepare_sft_data(tok, [long], max_length=100)


def test_conversation_without_assistant_is_an_error(tok):
    with pytest.raises(MaskError, match="example 1: .*no assistant"):
        prepare_sft_data(tok, [SINGLE, SINGLE[:1]], max_length=2048)
