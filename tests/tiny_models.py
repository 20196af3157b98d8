"""Tiny Llama models built from a config, for tests, benchmarks and the GPU check script.

Test-only code, so it lives under tests/ rather than in the library; the benchmarks and
scripts/gpu_check_quantize.py import it as ``tests.tiny_models`` (the repository root on
``sys.path``).

The linear layers dominate their weight bytes (a small vocabulary, tied embeddings), as in
real LLMs, so memory ratios measured on them carry over. No download, no tokenizer.
"""

from __future__ import annotations

import torch


def tiny_llama(hidden: int = 128, intermediate: int = 384, layers: int = 4, vocab: int = 256,
               heads: int = 4, kv_heads: int = 2, seed: int = 0, tie: bool = True,
               dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A randomly initialised ``LlamaForCausalLM`` in eval mode (same seed and device, same weights).

    ``device="cuda"`` initialises on the GPU (fast for large shapes; other weights than on CPU).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=256,
                         tie_word_embeddings=tie, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    # Trained models have weights well above the init scale; make the logits informative.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.mul_(2.5)
    return model.eval()


def add_outliers(model, block_indices: list[int], magnitude: float = 40.0, every: int = 16, seed: int = 1):
    """Plant large weights in some blocks' linear layers: those blocks become fragile to int4.

    Per-group int4 spends its 16 levels on the group's range; one outlier per ``every``
    weights widens each range and rounds its neighbours away. This is the kind of layer that
    mixed precision keeps high.
    """
    gen = torch.Generator().manual_seed(seed)
    blocks = model.model.layers
    with torch.no_grad():
        for i in block_indices:
            for m in blocks[i].modules():
                if isinstance(m, torch.nn.Linear):
                    w = m.weight
                    mask = torch.rand(w.shape, generator=gen) < 1.0 / every
                    w[mask] = w[mask].sign() * magnitude * w.abs().mean()
    return model
