"""Qwen 2 and 3, dense and mixture-of-experts: the llama layout with a q/k/v bias (Qwen2) or
a per-head q/k RMSNorm (Qwen3); ChatML templates ending a turn with <|im_end|>."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="qwen",
    rules={
        "qwen2": ArchRules("llama", tied_default=False, qkv_bias=True, o_bias=False),
        "qwen3": ArchRules("llama", tied_default=False, qk_norm="head"),
        # every layer sparse (decoder_sparse_step 1, no mlp_only_layers), as the released models
        "qwen3_moe": ArchRules("llama", tied_default=False, qk_norm="head", moe=True,
                               moe_intermediate_key="moe_intermediate_size"),
    },
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    end_of_turn=("<|im_end|>", "<|endoftext|>"),
)
