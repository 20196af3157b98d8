"""Llama, Mistral and Mixtral: separate q/k/v/o projections, a gated MLP, RMSNorm."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="llama",
    rules={
        "llama": ArchRules("llama", tied_default=False),
        "mistral": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, sliding="all"),
        "mixtral": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, moe=True,
                             sliding="all"),
    },
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    end_of_turn=("<|eot_id|>", "</s>"),  # Llama 3's end of turn; Mistral's [/INST] answers end with </s>
)
