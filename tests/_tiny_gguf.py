"""A tiny Qwen2 GGUF that llama.cpp can serve, with the very weights a transformers model holds,
so an API judge over llama.cpp can be compared number for number with emkit's local judge.

`sharpen_digits` first gives the tiny random model an opinion: its (untied) output rows for the
ten digits are scaled up, so most probability sits on them and every digit that
matters is inside an API's top-20 list (a flat random model spreads 1/600 over every token, and
its integer mass would be missing under any judge). The GGUF stores float32 tensors under
llama.cpp's qwen2 names, the tokenizer as `gpt2` BPE with the `qwen2` pre-tokenizer (digits one
by one, like the tiny tokenizer's), and the tiny chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def sharpen_digits(model: Any, tokenizer: Any, scale: float = 3.0) -> Any:
    """Untie the output layer and scale the output rows of '0'..'9' (in place)."""
    import torch

    head = model.get_output_embeddings()
    weight = head.weight.detach().clone()
    ids = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    weight[ids] *= scale
    model.lm_head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.config.tie_word_embeddings = False
    return model


def write_gguf(model: Any, tokenizer_dir: Path, out: Path, chat_template: str) -> Path:
    """`model` (a transformers Qwen2ForCausalLM) and its tokenizer as a float32 GGUF."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(out), "qwen2")
    writer.add_name("emkit-tiny-qwen2")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    rope = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or cfg.rope_theta
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tj = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    vocab = dict(tj["model"]["vocab"])
    special = {t["content"]: t["id"] for t in tj["added_tokens"]}
    vocab.update(special)
    tokens = [""] * cfg.vocab_size
    for text, i in vocab.items():
        tokens[i] = text
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_eot_token_id(special["<|im_end|>"])
    writer.add_pad_token_id(special["<|endoftext|>"])
    writer.add_bos_token_id(special["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(chat_template)

    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in LAYER_NAMES.items():
            writer.add_tensor(f"blk.{i}.{gg}", state[f"model.layers.{i}.{hf}"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
