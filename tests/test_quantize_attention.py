"""Attention implementation choice (CPU here; flash attention checks run on a GPU only)."""

import pytest
import torch

from rightsizer.runtime.attention import choose_attention
from tests.tiny_models import tiny_llama

IDS = torch.randint(3, 256, (2, 12), generator=torch.Generator().manual_seed(0))


def test_cpu_gets_sdpa_and_flash_is_explained():
    from transformers import LlamaForCausalLM

    choice = choose_attention("cpu", LlamaForCausalLM)
    assert choice.implementation == "sdpa"
    why = {c["implementation"]: c for c in choice.considered}
    assert not why["flash_attention_3"]["usable"] and "CUDA" in why["flash_attention_3"]["reason"]
    assert not why["flash_attention_2"]["usable"] and "CUDA" in why["flash_attention_2"]["reason"]
    assert "flash_attention_2" in choice.reason
    assert choice.from_pretrained_kwargs() == {"attn_implementation": "sdpa"}


def test_eager_only_as_last_resort():
    class NoFused(torch.nn.Module):
        _supports_sdpa = False
        _supports_flash_attn = False

    choice = choose_attention("cpu", NoFused)
    assert choice.implementation == "eager" and "does not support sdpa" in choice.reason


def test_chosen_implementation_runs_and_matches_eager():
    model = tiny_llama(layers=2)
    model.set_attn_implementation(choose_attention("cpu", model).implementation)
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        fused = model(IDS).logits
        model.set_attn_implementation("eager")
        eager = model(IDS).logits
    torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (flash attention and compute capability)")
def test_gpu_prefers_flash_when_installed():
    from transformers import LlamaForCausalLM
    from transformers.utils import is_flash_attn_2_available

    choice = choose_attention("cuda", LlamaForCausalLM)
    cc = torch.cuda.get_device_capability()
    if is_flash_attn_2_available() and cc >= (8, 0):
        assert choice.implementation.startswith("flash_attention")
    else:
        assert choice.implementation == "sdpa"
