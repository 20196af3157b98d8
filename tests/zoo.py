"""A zoo of tiny random models of real architectures, built here (nothing is committed).

Each entry is a transformers config class of a real family at toy size, with a tokenizer
shaped like that family's: byte-level BPE with a ChatML template (Qwen, OLMo, Mistral-style
instruct models), SentencePiece-style (Metaspace pieces, "▁") with a Gemma-style template,
and GPT-2 style (byte-level, no pad token, no chat template). The tokenizers are trained on
the demo tasks' text so prompts tokenize into a handful of pieces.

Some shapes are deliberately awkward, as in real checkpoints: phi3's fused gate_up projection
has 700 outputs and mistral's untied head a vocabulary that is not a multiple of 16 (what
int4 kernels refuse); gpt2's projections are ``Conv1D``, not ``nn.Linear``.

Adding an architecture: one :class:`ZooEntry` in :data:`ZOO` (and, when the project must know
something about it, one file under ``rightsizer/families/``).

Test-only code: tests import it as ``tests.zoo``; ``build(name, folder)`` writes a folder
that ``rightsizer.inference.load_model`` loads like any hub checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
# Gemma's shape: no system role (a system text goes before the first user turn), "model" for
# the assistant, <start_of_turn> / <end_of_turn>, and the BOS token written by the template.
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
         "{% set first = messages[0]['content'] + '\n\n' %}{% set messages = messages[1:] %}"
         "{% else %}{% set first = '' %}{% endif %}"
         "{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
         "else message['role'] %}{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '')"
         " + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: its config class, the config fields for a toy size, its tokenizer kind."""

    config_class: str
    config: dict
    tokenizer: str  # "chatml" (byte-level BPE), "gemma" (Metaspace), "gpt2" (byte-level, no pad)
    vocab: int = 400  # the tokenizer's target size (the trainer may stop short of it)
    extra: dict = field(default_factory=dict)


_SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}

ZOO: dict[str, ZooEntry] = {
    "qwen2": ZooEntry("Qwen2Config", {**_SMALL, "tie_word_embeddings": True}, "chatml"),
    "qwen3": ZooEntry("Qwen3Config", {**_SMALL, "head_dim": 16, "tie_word_embeddings": True}, "chatml"),
    "gemma3_text": ZooEntry("Gemma3TextConfig", {**_SMALL, "head_dim": 16, "sliding_window": 64,
                                                 "query_pre_attn_scalar": 16}, "gemma"),
    "phi3": ZooEntry("Phi3Config", {**_SMALL, "intermediate_size": 350, "num_key_value_heads": 4,
                                    "tie_word_embeddings": False}, "chatml"),
    "gpt2": ZooEntry("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512}, "gpt2"),
    "olmo2": ZooEntry("Olmo2Config", {**_SMALL, "tie_word_embeddings": False}, "chatml"),
    "mistral": ZooEntry("MistralConfig", {**_SMALL, "tie_word_embeddings": False, "sliding_window": 256},
                        "chatml", vocab=405),
    "qwen3_moe": ZooEntry("Qwen3MoeConfig", {**_SMALL, "head_dim": 16, "moe_intermediate_size": 32,
                                             "num_experts": 4, "num_experts_per_tok": 2,
                                             "decoder_sparse_step": 1, "tie_word_embeddings": True},
                          "chatml"),
}


def _texts() -> list[str]:
    out = []
    for path in sorted((ROOT / "tasks" / "data").glob("*/train.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out += [str(v) for v in row.values() if isinstance(v, str)]
    return out


def build_tokenizer(kind: str, vocab: int):
    """A fast tokenizer of the family's kind, trained on the demo tasks' text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "gemma":
        special = ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
        alphabet = sorted(set("".join(_texts())))
        tok.train_from_iterator(_texts(), trainers.BpeTrainer(
            vocab_size=vocab, special_tokens=special + [f"<0x{b:02X}>" for b in range(256)],
            initial_alphabet=alphabet))
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                     pad_token="<pad>", unk_token="<unk>",
                                     additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
        hf.chat_template = GEMMA
        hf.add_bos_token = True
        return hf
    special = ["<|endoftext|>"] + (["<|im_start|>", "<|im_end|>", "<|pad|>"] if kind == "chatml" else [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_texts(), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if kind == "gpt2":  # as GPT-2: one special token for BOS, EOS and unknown, no pad, no template
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                 additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    hf.chat_template = CHATML
    return hf


def build(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write the zoo model ``name`` (config, safetensors weights, tokenizer) to ``folder``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    entry = ZOO[name]
    folder = Path(folder)
    tok = build_tokenizer(entry.tokenizer, entry.vocab)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in (("bos", tok.bos_token), ("eos", tok.eos_token),
                                                         ("pad", tok.pad_token)) if v is not None}
    fields = dict(entry.config)
    if entry.config_class == "GPT2Config":
        fields.update(vocab_size=len(tok), bos_token_id=ids["bos"], eos_token_id=ids["eos"])
    else:
        fields.update(vocab_size=len(tok), bos_token_id=ids.get("bos"), eos_token_id=ids["eos"],
                      pad_token_id=ids.get("pad"))
    config = getattr(transformers, entry.config_class)(**fields, **entry.extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = ids.get("pad", ids["eos"])
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
