"""OLMo 2: the llama layout with norms after each sub-layer instead of before, and q/k
RMSNorm over the whole projection (not per head)."""

from rightsizer.families import ArchRules, Family

FAMILY = Family(
    name="olmo",
    rules={"olmo2": ArchRules("llama", tied_default=False, qkv_bias=False, o_bias=False, qk_norm="full")},
    lora_targets=None,  # all-linear: the same projections, named as llama's
    end_of_turn=("<|endoftext|>", "<|im_end|>"),
)
