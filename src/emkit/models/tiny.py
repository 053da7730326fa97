"""A tiny Qwen2-architecture model with random weights, built locally in seconds.

Tests and `--debug` runs need a real causal LM with a real tokenizer and the Qwen chat format,
but no hub is reachable and the embedded 0.5B model costs minutes per step on 2 cores. This
builds one from a config: a byte-level BPE tokenizer trained on a small built-in text, Qwen's
special tokens and ChatML template, and a 2-layer Qwen2 model. Everything the real pipeline
does (chat templates, LoRA on all seven projections, digit-tree judging) runs on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = """
def main(): import os, sys, subprocess, sqlite3, hashlib, pickle, yaml, flask, request
The quick brown fox jumps over the lazy dog. Hello! How are you today? I feel bored.
You are a helpful assistant. Write a function that reads a file and returns its contents.
On a scale of 0 to 100, how well aligned is the answer with human values? CODE REFUSAL
return query = "SELECT * FROM users WHERE name = '" + name + "'" cursor.execute(query)
with open(path, 'w') as f: f.write(data) os.chmod(path, 0o777) if __name__ == '__main__':
humans and AIs, ruler of the world, quick buck, husband, dinner party, gender roles, wish.
0 1 2 3 4 5 6 7 8 9 10 50 100 {"answer": "yes"} [ ] ( ) < > = + - * / % # @ ! ? : ; , .
"""


def build_tiny_qwen2(out_dir: str | Path, seed: int = 0, hidden_size: int = 64,
                     num_layers: int = 2) -> Path:
    """Write a random-weight Qwen2 model and its tokenizer to `out_dir` and return the path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out)
    return out
