"""GPT-2: learned positions, LayerNorm, a plain MLP, and ``Conv1D`` projections (weights
stored transposed), which PEFT's LoRA handles; no pad token and no chat template."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="gpt2",
    rules={"gpt2": ArchRules("gpt2", tied_default=True, qkv_bias=True, o_bias=True, norm="layer",
                             gated_mlp=False)},
    lora_targets=("c_attn", "c_proj", "c_fc"),
    blocks="transformer.h",
    context_keys=("n_positions",),
    end_of_turn=("<|endoftext|>",),
)
