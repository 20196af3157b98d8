"""Phi-3: fused qkv and gate_up projections (their widths are rarely multiples of an int4
kernel's tile), sliding window; turns end with <|end|>."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="phi3",
    rules={"phi3": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, sliding="all")},
    lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    end_of_turn=("<|end|>", "<|endoftext|>"),
)
