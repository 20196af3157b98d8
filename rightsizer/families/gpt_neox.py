"""GPT-NeoX (Pythia): fused query_key_value, LayerNorm, a plain MLP."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="gpt_neox",
    rules={"gpt_neox": ArchRules("gpt_neox", tied_default=False, norm="layer", gated_mlp=False)},
    lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    blocks="gpt_neox.layers",
    end_of_turn=("<|endoftext|>",),
)
