"""Gemma 1, 2 and 3 (text): the llama layout, tied embeddings, extra norms around each
sub-layer (Gemma 2 and 3), sliding-window layers, a per-head q/k norm (Gemma 3); turns end
with <end_of_turn>."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="gemma",
    rules={
        "gemma": ArchRules("llama", tied_default=True, qkv_bias=None, o_bias=None),
        "gemma2": ArchRules("llama", tied_default=True, norms_per_layer=4, sliding="alternate"),
        "gemma3_text": ArchRules("llama", tied_default=True, norms_per_layer=4, qk_norm="head",
                                 sliding="types"),
    },
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    end_of_turn=("<end_of_turn>",),
)
