"""The prompt-format layer (rightsizer/prompting.py) on tokenizers of three kinds: byte-level
BPE with a ChatML template (Qwen 2), SentencePiece-style Metaspace with a Gemma template that
writes its own BOS (Gemma 3), GPT-2 style with no template and no pad token; and the demo's
tokenizer (no template: raw text, as before)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rightsizer.errors import ConfigError
from rightsizer.inference import build_prompt, generate, load_model, score_options, with_format
from rightsizer.prompting import encode, resolve, split_continuation, stop_strings
from rightsizer.taskspec import load_task, task_from_dict
from tests.test_inference import _steer
from tests.zoo import build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("zoo-prompting")
    return {name: build(name, base / name) for name in ("qwen2", "gemma3_text", "gpt2")}


@pytest.fixture(scope="module")
def loaded(zoo):
    return {name: load_model(str(path)) for name, path in zoo.items()}


@pytest.fixture(scope="module")
def routing():
    return load_task(ROOT / "tasks" / "ticket_routing.yaml")


def _shots(spec, n=2):
    from rightsizer.evaluate import load_rows

    return load_rows(spec, "train", n)


def test_auto_is_the_template_where_the_tokenizer_has_one_else_raw(loaded, routing, demo_models):
    kinds = {name: resolve(routing, tok, model.config.model_type).kind for name, (model, tok) in loaded.items()}
    assert kinds == {"qwen2": "chat", "gemma3_text": "chat", "gpt2": "raw"}
    _, demo_tok = load_model("demo:tiny-s")
    assert resolve(routing, demo_tok).kind == "raw"  # the demo's decisions keep their prompts
    forced = dataclasses.replace(routing, prompt_format="raw")
    assert resolve(forced, loaded["qwen2"][1]).kind == "raw"
    chat = dataclasses.replace(routing, prompt_format="chat")
    with pytest.raises(ConfigError, match="prompt_format: chat, but the tokenizer of .* has no chat template"):
        resolve(chat, loaded["gpt2"][1])


def test_a_chat_prompt_has_the_system_turn_and_the_shots_as_turns(loaded, routing):
    model, tok = loaded["qwen2"]
    spec = with_format(dataclasses.replace(routing, system="Route the ticket."), tok, model.config)
    shots = _shots(spec)
    row = {"text": "my parcel is late"}
    expected = "<|im_start|>system\nRoute the ticket.<|im_end|>\n"
    for s in shots:
        expected += (f"<|im_start|>user\nTicket: {s['text']}\nQueue:<|im_end|>\n"
                     f"<|im_start|>assistant\n{s['label']}<|im_end|>\n")
    expected += "<|im_start|>user\nTicket: my parcel is late\nQueue:<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompt(spec, row, shots) == expected
    raw = dataclasses.replace(spec, rendering=resolve(dataclasses.replace(spec, prompt_format="raw"), tok))
    assert build_prompt(raw, row, shots).startswith("Route the ticket.\n\nTicket: ")
    # without a system text or shots, the raw prompt is the template filled, as it always was
    assert build_prompt(routing, row) == "Ticket: my parcel is late\nQueue:"


def test_a_template_that_writes_its_bos_does_not_get_a_second_one(loaded, routing):
    model, tok = loaded["gemma3_text"]
    spec = with_format(dataclasses.replace(routing, system="Route the ticket."), tok, model.config)
    prompt = build_prompt(spec, {"text": "hi"})
    assert prompt.startswith("<bos><start_of_turn>user\nRoute the ticket.\n\nTicket: hi")
    assert prompt.endswith("<start_of_turn>model\n")
    ids = encode(tok, prompt)
    assert ids.count(tok.bos_token_id) == 1 and tok(prompt)["input_ids"].count(tok.bos_token_id) == 2
    assert encode(tok, "Ticket: hi")[0] == tok.bos_token_id  # raw text still gets its BOS


def test_an_answer_is_encoded_with_its_prompt_and_scored_so(loaded, routing):
    model, tok = loaded["gemma3_text"]
    spec = with_format(routing, tok, model.config)
    prompt = build_prompt(spec, {"text": "my card was charged twice"})
    ctx, cont = split_continuation(tok, prompt, "billing")
    # after the generation prompt's line break the model reads "b ill ing"; tokenized apart,
    # the answer would start with a "▁b" piece it never reads there
    assert tok.convert_ids_to_tokens(cont) == ["b", "ill", "ing"]
    assert tok(" billing", add_special_tokens=False)["input_ids"] != cont
    assert ctx + cont == encode(tok, prompt + "billing")
    # the score is the log-probability of exactly those tokens after exactly that context
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    want = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    got = float(score_options(model, tok, [prompt], ["billing"])[0, 0])
    assert got == pytest.approx(want, abs=1e-4)
    # raw text: the answer follows after a space, as the demo always scored it
    raw_ctx, raw_cont = split_continuation(tok, "Ticket: x\nQueue:", "billing")
    assert raw_ctx + raw_cont == encode(tok, "Ticket: x\nQueue: billing")


def test_generation_stops_at_the_end_of_turn_and_may_span_lines(loaded, routing):
    model, tok = loaded["qwen2"]
    spec = with_format(dataclasses.replace(routing, type="generation", labels=[], metric="exact_match"),
                       tok, model.config)
    assert stop_strings(spec, "newline") == ()  # chat: the turn's end ends the answer
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    # the end tokens an instruct model's own generation config lists are kept (Llama 3 lists three)
    from types import SimpleNamespace

    from rightsizer.prompting import stop_token_ids

    own = SimpleNamespace(eos_token_id=[7, 8])
    assert stop_token_ids(model.config, tok, own)[:2] == [7, 8]
    assert set(stop_token_ids(model.config, tok)) <= set(stop_token_ids(model.config, tok, own))
    piece = {p: tok.encode(p, add_special_tokens=False) for p in ("the", "\n", "order", "<|im_end|>")}
    assert all(len(v) == 1 for v in piece.values()), piece
    piece = {p: v[0] for p, v in piece.items()}
    steps = {1: piece["the"], 2: piece["\n"], 3: piece["order"], 4: piece["<|im_end|>"], 5: piece["the"]}
    prompt = build_prompt(spec, {"text": "hi"})
    handle = _steer(model, steps)
    try:
        out = model.generate(torch.tensor([encode(tok, prompt)]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    finally:
        handle.remove()
    assert out.shape[1] == len(encode(tok, prompt)) + 4  # stopped at <|im_end|>, not at max_new_tokens
    handle = _steer(model, steps)
    try:
        assert generate(model, tok, [prompt], max_new_tokens=8, stop=stop_strings(spec, "newline")) == ["the\norder"]
    finally:
        handle.remove()
    # the spec's stop strings apply in any format; raw text keeps its one-line default
    assert stop_strings(dataclasses.replace(spec, stop=["der"]), "newline") == ("der",)
    raw = dataclasses.replace(spec, rendering=resolve(dataclasses.replace(spec, prompt_format="raw"), tok))
    assert stop_strings(raw, "newline") == ("\n",)


def test_training_rows_are_cut_from_the_left_and_end_with_the_turn(loaded):
    from rightsizer.finetune.data import tokenize_examples

    _, gemma = loaded["gemma3_text"]
    long_prompt = "Ticket: " + "my card was charged twice " * 40 + "\nQueue:"
    rows = tokenize_examples(gemma, [(long_prompt, "billing"), ("Ticket: hi\nQueue:", "account")], 32)
    cut, kept = rows
    assert cut["truncated"] and not kept["truncated"] and len(cut["input_ids"]) == 32
    assert cut["input_ids"][0] == gemma.bos_token_id  # its BOS kept, the prompt's start dropped
    answer = [t for t, lab in zip(cut["input_ids"], cut["labels"]) if lab != -100]
    assert gemma.decode(answer, skip_special_tokens=True).strip() == "billing"  # the answer survived
    assert answer[-1] == gemma.eos_token_id
    _, qwen = loaded["qwen2"]
    (row,) = tokenize_examples(qwen, [("<|im_start|>assistant\n", "billing")], 64, answer_end="<|im_end|>")
    assert row["labels"][-1] == qwen.convert_tokens_to_ids("<|im_end|>")
    with pytest.raises(ConfigError, match="answer_end: '<eot>' is not a token"):
        tokenize_examples(qwen, [("x", "y")], 64, answer_end="<eot>")


def test_the_spec_checks_its_format_fields(routing):
    base = json.loads(json.dumps(routing.to_dict()))
    with pytest.raises(ConfigError, match=r"prompt_format: 'fancy'; expected one of \['auto', 'chat', 'raw'\]"):
        task_from_dict({**base, "prompt_format": "fancy"}, base_dir=str(ROOT / "tasks"))
    with pytest.raises(ConfigError, match="stop: \\[''\\]; expected non-empty strings"):
        task_from_dict({**base, "stop": [""]}, base_dir=str(ROOT / "tasks"))
    with pytest.raises(ConfigError, match="system: expected str | None"):
        task_from_dict({**base, "system": 3}, base_dir=str(ROOT / "tasks"))
    ok = task_from_dict({**base, "prompt_format": "chat", "system": "Be brief.", "stop": ["\n\n"]},
                        base_dir=str(ROOT / "tasks"))
    assert (ok.prompt_format, ok.system, ok.stop) == ("chat", "Be brief.", ["\n\n"])
    assert "rendering" not in ok.to_dict()


def test_the_sample_log_shows_the_prompt_as_the_model_read_it(zoo, routing, demo_models):
    from rightsizer.evaluate import evaluate_model

    spec = dataclasses.replace(routing, max_eval_examples=4)
    report = evaluate_model(spec, str(zoo["qwen2"]), repeats=1, output_tokens=2)
    assert report["prompt_format"] == "chat" and len(report["samples"]) == 4
    first = report["samples"][0]
    assert first["prompt"].startswith("<|im_start|>user\nTicket: ") and first["prompt"].endswith("assistant\n")
    assert set(first) == {"index", "prompt", "answer", "gold", "score"} and first["score"] in (0.0, 1.0)
    assert [s["answer"] for s in report["samples"]] == report["predictions"]
    demo = evaluate_model(spec, "demo:tiny-s", repeats=1, output_tokens=2)
    assert demo["prompt_format"] == "raw" and demo["samples"][0]["prompt"].startswith("Ticket: ")


@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
@pytest.mark.parametrize("task_type", ["classification", "generation"])
def test_the_server_answers_what_the_evaluate_step_measured_in_chat_format(zoo, arch, task_type, tmp_path):
    """A chat-template model with a system text and few-shot turns: the served answers are
    the evaluated ones, row by row (the same rendering, encoding and stops on both paths)."""
    import mlrun

    from functions.serving import set_task_models
    from rightsizer.bundle import write_bundle
    from rightsizer.evaluate import evaluate_model, load_rows
    from tests.test_inference import _specs

    spec = dataclasses.replace(_specs(tmp_path)[task_type], system="Answer briefly.", max_new_tokens=6)
    shots = load_rows(spec, "train", 2)
    bundle = write_bundle(zoo[arch], spec, tmp_path / "bundle", base_model=str(zoo[arch]), rung="few_shot",
                          shots=shots)
    measured = evaluate_model(spec, str(bundle), repeats=1, progress=False)
    assert measured["prompt_format"] == "chat"
    assert all("Answer briefly." in s["prompt"] for s in measured["samples"])
    rows = load_rows(spec, "eval", spec.max_eval_examples)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("serving")
    set_task_models(fn, {spec.name: str(bundle)})
    server = fn.to_mock_server()
    try:
        out = server.test(f"/v2/models/{spec.name}/infer",
                          body={"inputs": [r[spec.input_field] for r in rows]})["outputs"]
    finally:
        server.wait_for_completion()
    key = "label" if task_type == "classification" else "generated"
    assert [o[key] for o in out] == measured["predictions"]
