"""The serving engine on the demo models: continuous batching is greedy ``generate``, token for
token; answers equal the inference core's ``respond`` for every task type; the queue bound,
the cache bound and the settings behave as documented."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from pathlib import Path

import pytest
import torch

from rightsizer.bundle import write_bundle
from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows
from rightsizer.inference import build_prompt, load_bundle, respond
from rightsizer.serving import EngineConfig, ServingError, TaskEngine
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]


def _specs() -> dict:
    routing = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    extraction = dataclasses.replace(routing, name="routing_extraction", type="extraction",
                                     metric="exact_match", labels=[], max_new_tokens=4)
    # a prompt the models were not trained on: generations run past line breaks and to EOS
    generation = dataclasses.replace(extraction, name="routing_generation", type="generation",
                                     metric="rouge_l", max_new_tokens=12, prompt="Note: {text}")
    return {"classification": routing, "extraction": extraction, "generation": generation}


def _engine(demo_models, tmp: Path, model: str, spec, **config) -> TaskEngine:
    bundle = write_bundle(demo_models / "models" / model, spec, tmp / f"{model}-{spec.name}",
                          base_model=f"demo:{model}", rung="zero_shot")
    return TaskEngine.from_bundle_dir(bundle, device="cpu", config=EngineConfig(**config))


def _greedy_tokens(model, tokenizer, prompt: str, n: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def _to_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.mark.parametrize("model", ["tiny-s", "tiny-m", "tiny-l"])
def test_continuous_batching_is_greedy_generate_token_for_token(model, demo_models, tmp_path):
    spec = _specs()["generation"]
    engine = _engine(demo_models, tmp_path, model, spec)
    try:
        rows = load_rows(spec, "eval", 24)
        prompts = [build_prompt(spec, r) for r in rows] + [
            build_prompt(_specs()["classification"], r) for r in rows[:8]]  # mixed lengths
        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # joined as they arrive
            batched = list(pool.map(lambda p: engine.generate_tokens([p], 16)[0], prompts))
        eos = engine.model.generation_config.eos_token_id
        alone = [_greedy_tokens(engine.model, engine.tokenizer, p, 16) for p in prompts]
        assert [_to_eos(b, eos) for b in batched] == [_to_eos(a, eos) for a in alone]
        assert any(len(_to_eos(a, eos)) >= 3 for a in alone)  # real generations, not one token
    finally:
        engine.stop()


@pytest.mark.parametrize("task_type", ["classification", "extraction", "generation"])
def test_engine_answers_as_the_inference_core_responds(task_type, demo_models, tmp_path):
    spec = _specs()[task_type]
    engine = _engine(demo_models, tmp_path, "tiny-s", spec)
    try:
        texts = [r["text"] for r in load_rows(spec, "eval", 20)]
        with concurrent.futures.ThreadPoolExecutor(20) as pool:  # one request per input, at once
            served = list(pool.map(lambda t: engine.answer([t])[0], texts))
        bundle = load_bundle(tmp_path / f"tiny-s-{spec.name}", device="cpu")
        expected = respond(bundle.model, bundle.tokenizer, bundle.spec, texts, bundle.shots)
        assert [a.response for a in served] == expected
        assert all(a.prompt_tokens > 0 and a.completion_tokens > 0 for a in served)
    finally:
        engine.stop()


def test_a_streamed_generation_joins_up_to_the_answered_one_while_others_are_answered(demo_models, tmp_path):
    spec = _specs()["generation"]
    engine = _engine(demo_models, tmp_path, "tiny-s", spec, cache_size=0)
    try:
        texts = [r["text"] for r in load_rows(spec, "eval", 12)]
        answered = [a.response["generated"] for a in engine.answer(texts)]

        def streamed(text):
            items = list(engine.stream_text(text))
            deltas, final = items[:-1], items[-1]
            assert all(isinstance(d, str) and d for d in deltas)
            assert "".join(deltas) == final.response["generated"] and final.prompt_tokens > 0
            return final.response["generated"], len(deltas)

        with concurrent.futures.ThreadPoolExecutor(12) as pool:  # streams and answers in one batch
            both = list(pool.map(streamed, texts))
            again = list(pool.map(lambda t: engine.answer([t])[0].response["generated"], texts))
        assert [g for g, _ in both] == answered == again
        assert max(n for _, n in both) > 1  # several deltas, not one chunk at the end
        assert engine.in_flight == 0 and not engine._streams  # every stream ended and let go
        # an async consumer that stops early lets go of the request: nothing stays in flight

        async def first_delta():
            agen = engine.stream_async(texts[0])
            first = await agen.__anext__()
            await agen.aclose()
            return first

        assert asyncio.run(first_delta())
        for _ in range(100):  # the worker notices between two steps (a wait, not a speed check)
            if engine.in_flight == 0:
                break
            time.sleep(0.05)
        assert engine.in_flight == 0 and not engine._streams
    finally:
        engine.stop()


def test_only_generation_tasks_stream(demo_models, tmp_path):
    engine = _engine(demo_models, tmp_path, "tiny-s", _specs()["classification"])
    try:
        with pytest.raises(ServingError, match="only generation tasks stream") as exc:
            next(engine.stream_text("I was charged twice"))
        assert exc.value.status == 400 and exc.value.param == "stream"
    finally:
        engine.stop()


def test_beyond_the_queue_bound_503_and_every_accepted_request_completes(demo_models, tmp_path):
    spec = _specs()["generation"]
    engine = _engine(demo_models, tmp_path, "tiny-s", spec, max_queue=4, cache_size=0)
    texts = [r["text"] for r in load_rows(spec, "eval", 12)]
    expected = {t: engine.answer([t])[0].response for t in texts}

    async def burst():
        return await asyncio.gather(*(engine.answer_async([t]) for t in texts), return_exceptions=True)

    try:
        results = asyncio.run(burst())
        refused = [r for r in results if isinstance(r, ServingError)]
        answered = [(t, r[0]) for t, r in zip(texts, results) if isinstance(r, list)]
        assert len(refused) + len(answered) == len(texts)  # nothing else went wrong
        assert refused and all(e.status == 503 and e.retry_after for e in refused)
        assert "max_queue 4" in refused[0].message
        assert answered and all(a.response == expected[t] for t, a in answered)
        assert engine.in_flight == 0  # every admitted request released its slot
        # one request larger than the bound could never be admitted: 413, not a retryable 503
        with pytest.raises(ServingError, match=r"5 inputs in one request; at most 4 \(max_queue\)") as e:
            asyncio.run(engine.answer_async(texts[:5]))
        assert e.value.status == 413 and e.value.retry_after is None and engine.in_flight == 0
    finally:
        engine.stop()


def test_cache_is_exact_match_and_bounded(demo_models, tmp_path):
    engine = _engine(demo_models, tmp_path, "tiny-s", _specs()["classification"], cache_size=2,
                     cache_scope="shared")
    try:
        first = engine.answer(["I was charged twice"])[0]
        again = engine.answer(["I was charged twice"])[0]
        assert again.cached and not first.cached and again.response == first.response
        assert not engine.answer(["I was charged twice!"])[0].cached  # exact match only
        engine.answer(["my parcel is late"])
        assert len(engine._cache) == 2
        assert not engine.answer(["I was charged twice"])[0].cached  # the oldest was evicted
    finally:
        engine.stop()


def test_the_cache_answers_a_client_only_from_requests_with_its_salt(demo_models, tmp_path):
    # by default ("salted") a repeated text is answered from the cache only for a request with
    # the same cache_salt: no client can time whether another one asked that text
    engine = _engine(demo_models, tmp_path, "tiny-s", _specs()["classification"], cache_size=8)
    try:
        text = ["I was charged twice"]
        assert not engine.answer(text)[0].cached and not engine.answer(text)[0].cached
        assert not engine.answer(text, cache_salt="alice")[0].cached
        assert engine.answer(text, cache_salt="alice")[0].cached
        assert not engine.answer(text, cache_salt="bob")[0].cached
        assert not engine.answer(text)[0].cached  # no salt: never from the cache
    finally:
        engine.stop()
    with pytest.raises(ConfigError, match="engine.cache_scope: 'everyone'; expected one of"):
        EngineConfig.from_dict({"cache_scope": "everyone"})


def test_limits_name_the_field(demo_models, tmp_path):
    engine = _engine(demo_models, tmp_path, "tiny-s", _specs()["classification"])
    try:
        with pytest.raises(ServingError, match="exceeds the model's context of 256 tokens") as e:
            engine.answer(["refund " * 1000])
        assert e.value.status == 400 and e.value.param == "input"
        with pytest.raises(ServingError, match="max_tokens: 999; expected an integer from 1 to 16"):
            engine.answer(["hi"], max_new_tokens=999)
    finally:
        engine.stop()
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['blocks'\]"):
        EngineConfig.from_dict({"blocks": 4})
    with pytest.raises(ConfigError, match="engine.num_blocks: -1"):
        EngineConfig.from_dict({"num_blocks": -1})


def test_an_engine_sized_for_a_planned_load_limits_prompts_to_its_kv_cache(demo_models, tmp_path):
    # a fleet plan's placement: 2 sequences of 40 + 8 tokens -> 96 KV tokens, under the
    # model's 256-token context; prompts beyond the cache get a 400 naming it, shorter ones answer
    config = EngineConfig.for_load(batch=2, prompt_tokens=40, output_tokens=8)
    assert config.page_size * config.num_blocks >= 2 * 48 and config.num_blocks == 3
    assert config.max_requests_per_batch == 2
    spec = _specs()["classification"]
    bundle = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "b", base_model="demo:tiny-s",
                          rung="zero_shot")
    engine = TaskEngine.from_bundle_dir(bundle, device="cpu", config=config)
    try:
        assert engine.context_tokens == 96 and engine.model_context_tokens == 256
        before = engine.answer(["I was charged twice"])[0].response
        assert before["label"] in spec.labels
        with pytest.raises(ServingError, match=r"exceeds the engine's KV cache .* of 96 tokens") as e:
            engine.answer(["refund " * 200])
        assert e.value.status == 400
        assert engine.answer(["I was charged twice"])[0].response == before  # the 400 left no trace
    finally:
        engine.stop()
    with pytest.raises(ConfigError, match="engine.max_queue: 0"):
        EngineConfig.for_load(batch=2, prompt_tokens=40, output_tokens=8, max_queue=0)


def test_truncate_left_keeps_the_end_of_an_input_too_long_for_the_context(demo_models, tmp_path):
    spec = dataclasses.replace(_specs()["classification"], truncate="left")
    engine = _engine(demo_models, tmp_path, "tiny-s", spec, cache_size=0)
    try:
        long = "hello " * 400 + "I was charged twice"
        text, n = engine.fit(long)
        assert text.endswith("I was charged twice") and len(text) < len(long)
        assert n + spec.max_new_tokens <= engine.context_tokens  # the cut prompt fits, output included
        answer = engine.answer([long])[0]  # answered, not refused
        assert answer.prompt_tokens == n
        assert answer.response == engine.answer([text])[0].response  # the answer of the kept end
        assert engine.fit("I was charged twice")[0] == "I was charged twice"  # short inputs untouched
    finally:
        engine.stop()


def test_truncate_is_checked_when_the_spec_loads(tmp_path):
    import yaml

    from rightsizer.taskspec import load_task

    raw = yaml.safe_load((ROOT / "tasks" / "ticket_routing.yaml").read_text())
    raw["truncate"] = "right"
    raw["dataset"] = {k: str((ROOT / "tasks" / v).resolve()) for k, v in raw["dataset"].items()}
    bad = tmp_path / "t.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"truncate: 'right'; expected one of \['none', 'left'\]"):
        load_task(bad)
