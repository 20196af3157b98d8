"""A serving engine per task model: continuous batching for generation, micro-batches for scoring.

Answers go through the inference core (``inference.respond_with``): the same prompt, task
type, stop rule and response shape the evaluate step measured. What changes is the model
runner beneath the task type: instead of one ``generate`` per request,

- every generation joins transformers' own continuous batch
  (``model.init_continuous_batching`` -> ``ContinuousBatchingManager``; greedy, sized
  explicitly: the default sizes the KV cache from the free memory of the whole machine, and
  two managers in one process were OOM-killed at 24 GB);
- label scoring (the manager returns log-probs of generated tokens only) is gathered from
  concurrent requests into micro-batches (``score_window_s``, ``score_max_batch``) scored by
  ``inference.score_options``.

Each request runs the task type's code in a worker thread that blocks on those two batchers,
so requests are batched across callers without a second implementation of any task type.
Admission is bounded (``max_queue`` inputs in flight per task: beyond it a 503 with
Retry-After), inputs longer than the context minus the output budget get a 400 naming the
limit, identical inputs are answered from a bounded exact-match cache, and a request has a
deadline (504).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import queue
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rightsizer import tasktypes
from rightsizer.families import context_length
from rightsizer.inference import (Bundle, apply_stop, build_prompt, continuation_logprobs, load_bundle,
                                  respond_with, score_options)
from rightsizer.prompting import encode, stop_strings
from rightsizer.serving.contract import MAX_CHARS_PER_TOKEN, Answer, EngineConfig, check_top_logprobs
from rightsizer.serving.errors import ServingError, bad_request
from rightsizer.tasktypes.base import Predictions
from rightsizer.taskspec import TaskSpec


_LIVE: weakref.WeakSet[TaskEngine] = weakref.WeakSet()


def stop_all() -> None:
    """Stop every engine of this process (a server shutting down)."""
    for engine in list(_LIVE):
        engine.stop()


class _Runner:
    """The model runner one request's task type predicts with (``tasktypes.Engine``): every
    prompt goes to the engine's shared batchers; completion tokens are counted per prompt.
    ``replay``: the token ids already generated for each prompt (a finished stream), handed
    to the task type in place of a new generation."""

    def __init__(self, engine: TaskEngine, n: int, ignore_eos: bool = False,
                 replay: list[list[int]] | None = None):
        self._engine, self._ignore_eos, self._replay = engine, ignore_eos, replay
        self.completion_tokens = [0] * n
        self.finish = ["stop"] * n  # per prompt: "length" when its generation hit the budget
        self.option_scores: list[list[float]] = []  # per prompt: each label's log-likelihood
        self.generated: list[tuple[str, list[int], str]] = [("", [], "")] * n  # prompt, tokens, kept text

    def score_options(self, prompts: list[str], options: list[str], batch_size: int = 32,
                      progress: bool = False) -> list[list[float]]:
        self.option_scores = self._engine.score(prompts, options)
        return self.option_scores

    def generate(self, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...],
                 batch_size: int = 16, progress: bool = False) -> list[str]:
        outs = (self._replay if self._replay is not None
                else self._engine.generate_tokens(prompts, max_new_tokens, self._ignore_eos))
        tok = self._engine.tokenizer
        texts = [tok.decode(t, skip_special_tokens=True) for t in outs]
        kept = [apply_stop(t, stop) for t in texts]
        for i, (tokens, text) in enumerate(zip(outs[:len(self.completion_tokens)], texts)):
            self.completion_tokens[i] += len(tokens)
            self.finish[i] = self._engine.finish_reason(tokens, text, max_new_tokens, stop)
            self.generated[i] = (prompts[i], list(tokens), kept[i])
        return kept

    def logprobs(self, k: int, spec: TaskSpec, top: int) -> list[dict]:
        """Prompt ``k``'s answer tokens with their log-probabilities and ``top`` alternatives: the
        label among the labels (classification, as it was scored), else the generated tokens up
        to where the answer was cut (teacher-forced: one forward pass over prompt and answer)."""
        if spec.type == "classification":
            lp = torch.log_softmax(torch.tensor(self.option_scores[k], dtype=torch.float64), dim=0).tolist()
            ranked = sorted(zip(spec.labels, lp), key=lambda x: -x[1])
            return [{"token": ranked[0][0], "logprob": ranked[0][1], "top": [list(x) for x in ranked[:top]]}]
        prompt, tokens, kept = self.generated[k]
        return self._engine.token_logprobs(prompt, self._engine.answer_tokens(tokens, kept), top)


@dataclass
class _ScoreJob:
    prompts: list[str]
    options: tuple[str, ...]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class TaskEngine:
    """One task model answering concurrent requests through shared batchers (thread-safe)."""

    def __init__(self, bundle: Bundle, config: EngineConfig | None = None):
        self.bundle, self.config = bundle, config or EngineConfig()
        self.model, self.tokenizer = bundle.model, bundle.tokenizer
        self.spec, self.shots = bundle.spec, bundle.shots
        self.model_context_tokens = int(context_length(self.model.config) or self.tokenizer.model_max_length)
        # a request must fit the KV cache the engine was sized for, not only the model's
        # context: a fleet plan sizes the cache for its workload, which may be shorter
        kv_tokens = self.config.page_size * self.config.num_blocks
        self.context_tokens = min(self.model_context_tokens, kv_tokens)
        self._context_name = ("the model's context" if self.context_tokens == self.model_context_tokens
                              else f"the engine's KV cache (page_size * num_blocks; the model's context is "
                                   f"{self.model_context_tokens})")
        # One forward pass at a time on this model: the continuous batch's thread and the
        # scoring thread share the model, and label scores came out different (by ~1 %) when
        # their forward passes overlapped. Both call model(...), so the lock is on forward.
        self._forward_lock = threading.RLock()
        forward = self.model.forward

        def locked_forward(*args, **kwargs):
            with self._forward_lock:
                return forward(*args, **kwargs)

        self.model.forward = locked_forward
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: dict[str, concurrent.futures.Future] = {}
        self._streams: dict[str, queue.Queue] = {}  # streamed requests: every partial output
        self._cache: OrderedDict[tuple, Answer] = OrderedDict()
        self._in_flight = 0
        self._peak_in_flight = 0  # the most inputs this engine has held at once
        self._answered = 0
        self._score_q: queue.Queue[_ScoreJob | None] = queue.Queue()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_queue, thread_name_prefix=f"rs-{self.spec.name}")
        self._stopping = threading.Event()
        self._manager = None
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_bundle_dir(cls, bundle_dir: str | Path, device: str | None = None,
                        config: EngineConfig | None = None) -> TaskEngine:
        """Load a serving bundle and start its engine."""
        engine = cls(load_bundle(bundle_dir, device=device or "auto"), config)
        engine.start()
        return engine

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the continuous batch and the scoring and result threads."""
        from transformers import ContinuousBatchingConfig, GenerationConfig

        c = self.config
        gen = GenerationConfig(do_sample=False, max_new_tokens=self.spec.max_new_tokens,
                               eos_token_id=self.model.generation_config.eos_token_id,
                               pad_token_id=self.tokenizer.pad_token_id)
        # auto_switch_to_flash off: the model's attention stays as loaded (sdpa), so the same
        # model object still scores labels with a plain forward pass
        cb = ContinuousBatchingConfig(page_size=c.page_size, num_blocks=c.num_blocks,
                                      max_batch_tokens=c.max_batch_tokens,
                                      max_requests_per_batch=c.max_requests_per_batch,
                                      allow_block_sharing=c.allow_block_sharing,
                                      auto_switch_to_flash=False)
        self._manager = self.model.init_continuous_batching(generation_config=gen,
                                                            continuous_batching_config=cb)
        # started from a daemon thread so that its generation thread is a daemon too (threads
        # inherit it): an engine never left stopped must not keep the interpreter from exiting
        starter = threading.Thread(target=self._manager.start, daemon=True)
        starter.start()
        starter.join()
        _LIVE.add(self)
        for target, name in ((self._collect, "results"), (self._score_loop, "scoring")):
            t = threading.Thread(target=target, name=f"rs-{self.spec.name}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the threads and the continuous batch; pending requests fail with 503."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._score_q.put(None)
        if self._manager is not None:
            self._manager.stop(block=True, timeout=10)
        for t in self._threads:
            t.join(timeout=10)
        self._fail_pending(ServingError(503, f"task {self.task!r}: the engine stopped"))
        self._pool.shutdown(wait=False, cancel_futures=True)
        _LIVE.discard(self)

    # ---- batchers (blocking, any thread) ----------------------------------------------
    def generate_tokens(self, prompts: list[str], max_new_tokens: int, ignore_eos: bool = False) -> list[list[int]]:
        """Greedy continuations of the prompts through the continuous batch (token ids);
        ``ignore_eos``: each runs to ``max_new_tokens`` (a load generator's fixed output length)."""
        futures: dict[str, concurrent.futures.Future] = {}
        for p in prompts:
            rid = f"{self.task}-{next(self._ids)}"
            fut: concurrent.futures.Future = concurrent.futures.Future()
            with self._lock:
                self._pending[rid] = fut
            self._manager.add_request(encode(self.tokenizer, p), request_id=rid,
                                      max_new_tokens=max_new_tokens, **self._eos(ignore_eos))
            futures[rid] = fut
        try:
            return [f.result(timeout=self.config.deadline_s).generated_tokens for f in futures.values()]
        except concurrent.futures.TimeoutError:
            for rid in futures:  # free their KV blocks: nobody waits for them any more
                with self._lock:
                    self._pending.pop(rid, None)
                self._manager.cancel_request(rid)
            raise ServingError(504, f"task {self.task!r}: no generation within the deadline of "
                                    f"{self.config.deadline_s} s") from None

    def score(self, prompts: list[str], options: list[str]) -> list[list[float]]:
        """Log-likelihood of each option after each prompt, scored with other requests' prompts."""
        job = _ScoreJob(list(prompts), tuple(options))
        self._score_q.put(job)
        return job.future.result(timeout=self.config.deadline_s)

    def _collect(self) -> None:
        """Hand the continuous batch's finished requests to their waiting threads."""
        while not self._stopping.is_set():
            out = self._manager.get_result(timeout=0.1)
            if out is None:
                fatal = self._manager.background_thread_status.fatal_error
                if fatal is not None:
                    self._fail_pending(ServingError(503, f"task {self.task!r}: generation failed ({fatal})"))
                    time.sleep(0.1)
                continue
            with self._lock:
                stream = self._streams.get(out.request_id)
            if stream is not None:  # a streamed request sees every step's output, the last one too
                stream.put(out)
                if out.is_finished():
                    with self._lock:
                        self._streams.pop(out.request_id, None)
                continue
            if not out.is_finished():
                continue
            with self._lock:
                fut = self._pending.pop(out.request_id, None)
            if fut is None:
                continue
            if out.error:
                fut.set_exception(ServingError(500, f"task {self.task!r}: generation failed ({out.error})"))
            else:
                fut.set_result(out)

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            streams, self._streams = self._streams, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
        for q in streams.values():
            q.put(error)

    def _score_loop(self) -> None:
        """Form micro-batches from the scoring jobs of concurrent requests."""
        c = self.config
        while True:
            job = self._score_q.get()
            if job is None:
                return
            batch, n, stop_after = [job], len(job.prompts), False
            until = time.monotonic() + c.score_window_s
            while n < c.score_max_batch:
                left = until - time.monotonic()
                try:
                    nxt = self._score_q.get(timeout=left) if left > 0 else self._score_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop_after = True
                    break
                batch.append(nxt)
                n += len(nxt.prompts)
            by_options: dict[tuple[str, ...], list[_ScoreJob]] = {}
            for j in batch:
                by_options.setdefault(j.options, []).append(j)
            for options, jobs in by_options.items():
                try:
                    with torch.no_grad():
                        scores = score_options(self.model, self.tokenizer,
                                               [p for j in jobs for p in j.prompts], list(options),
                                               batch_size=c.score_max_batch).tolist()
                except Exception as e:  # every waiting request learns why, none hangs
                    for j in jobs:
                        j.future.set_exception(e)
                    continue
                at = 0
                for j in jobs:
                    j.future.set_result(scores[at:at + len(j.prompts)])
                    at += len(j.prompts)
            if stop_after:
                return

    # ---- requests -------------------------------------------------------------------
    @property
    def max_tokens_cap(self) -> int:
        """The most output tokens a request may ask for (the spec's generation lengths)."""
        return max(self.spec.max_new_tokens, self.spec.workload.output_tokens)

    def check(self, text: str, max_new_tokens: int | None = None) -> int:
        """Prompt tokens of ``text`` once templated; a 400 naming the limit when the prompt and
        its output budget do not fit in the served context."""
        return self.fit(text, max_new_tokens)[1]

    def fit(self, text: str, max_new_tokens: int | None = None) -> tuple[str, int]:
        """``text`` as it will be answered and its prompt's tokens: unchanged when it fits; cut
        from its start when the task spec says ``truncate: left``; a 400 naming the limit otherwise.
        A text far beyond the context (``MAX_CHARS_PER_TOKEN`` characters per token) is refused,
        or cut, from its length alone, before it is tokenized."""
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(
                max_new_tokens, int) or not 1 <= max_new_tokens <= self.max_tokens_cap):
            raise bad_request(f"max_tokens: {max_new_tokens!r}; expected an integer from 1 to "
                              f"{self.max_tokens_cap} (task {self.task!r})", param="max_tokens")
        label_tokens = max((len(self.tokenizer(" " + lab, add_special_tokens=False)["input_ids"])
                            for lab in self.spec.labels), default=0)
        budget = max(self.spec.max_new_tokens, max_new_tokens or self.spec.workload.output_tokens,
                     label_tokens)
        most_chars = self.context_tokens * MAX_CHARS_PER_TOKEN
        if len(text) > most_chars:
            if self.spec.truncate != "left":
                raise bad_request(
                    f"input: {len(text):,} characters, far beyond {self._context_name} of "
                    f"{self.context_tokens} tokens (refused before tokenizing: more than "
                    f"{MAX_CHARS_PER_TOKEN} characters per token)", param="input")
            text = text[len(text) - most_chars:]
        n = self._prompt_tokens(text)
        if n + budget > self.context_tokens and self.spec.truncate == "left":
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = len(ids) - (n + budget - self.context_tokens)
            while keep > 0:  # decoding and re-encoding may not give back the same count
                text = self.tokenizer.decode(ids[len(ids) - keep:], skip_special_tokens=True)
                n = self._prompt_tokens(text)
                if n + budget <= self.context_tokens:
                    break
                keep -= max(1, n + budget - self.context_tokens)
        if n + budget > self.context_tokens:
            raise bad_request(
                f"input: the prompt is {n} tokens (template and examples included); with {budget} "
                f"output tokens it exceeds {self._context_name} of {self.context_tokens} tokens "
                f"(at most {self.context_tokens - budget} prompt tokens)", param="input")
        return text, n

    def _prompt_tokens(self, text: str) -> int:
        prompt = build_prompt(self.spec, {self.spec.input_field: text}, self.shots)
        return len(encode(self.tokenizer, prompt))

    def request_spec(self, max_new_tokens: int | None = None, stop: list[str] | None = None) -> TaskSpec:
        """The task spec one request is answered with: a generated answer cut at the request's
        ``max_tokens`` (when it asks for fewer than the spec) and at its ``stop`` strings too."""
        spec = self.spec
        if max_new_tokens is not None and spec.type != "classification" and max_new_tokens < spec.max_new_tokens:
            spec = dataclasses.replace(spec, max_new_tokens=max_new_tokens)
        if stop:
            own = stop_strings(spec, tasktypes.get(spec.type).stop)
            spec = dataclasses.replace(spec, stop=list(own) + [x for x in stop if x not in own])
        return spec

    def finish_reason(self, tokens: list[int], text: str, budget: int, stop) -> str:
        """``"length"`` when a generation used its whole budget without an end token or a stop
        string, ``"stop"`` otherwise."""
        ends = self.model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends])
        cut = apply_stop(text, stop) != text.strip()  # a stop string ended the answer
        if len(tokens) < budget or (tokens and tokens[-1] in ends) or cut:
            return "stop"
        return "length"

    def answer_tokens(self, tokens: list[int], kept: str) -> list[int]:
        """The generated ``tokens`` that make up the answer text ``kept`` (cut at a stop string):
        the fewest that decode to at least its length, end tokens left out."""
        specials = set(self.tokenizer.all_special_ids)
        tokens = [t for t in tokens if t not in specials]
        want = len(kept.strip())
        for n in range(len(tokens) + 1):
            if len(self.tokenizer.decode(tokens[:n], skip_special_tokens=True).strip()) >= want:
                return tokens[:n]
        return tokens

    def token_logprobs(self, prompt: str, tokens: list[int], top: int = 0) -> list[dict]:
        """Each of ``tokens``' log-probability after ``prompt`` and the tokens before it, with the
        ``top`` most likely tokens at that step (one forward pass over prompt and tokens)."""
        if not tokens:
            return []
        ids = encode(self.tokenizer, prompt)
        x = torch.tensor([ids + tokens], device=self.model.device)
        with torch.inference_mode():
            logits = self.model(input_ids=x).logits[0, len(ids) - 1:-1].float()
        lp = torch.log_softmax(logits, dim=-1)
        chosen = lp.gather(1, torch.tensor(tokens, device=lp.device)[:, None])[:, 0].tolist()
        alts = lp.topk(top, dim=-1) if top else None
        dec = self.tokenizer.decode
        out = []
        for i, (t, v) in enumerate(zip(tokens, chosen)):
            alt = ([[dec([j]), float(a)] for a, j in zip(alts.values[i].tolist(), alts.indices[i].tolist())]
                   if alts is not None else [])
            out.append({"token": dec([t]), "logprob": float(v), "top": alt})
        return out

    def _cache_key(self, text: str, max_new_tokens, stop, salt, ignore_eos, logprobs=None,
                   confidence: bool = False) -> tuple | None:
        if not self.config.cache_size or (self.config.cache_scope == "salted" and salt is None):
            return None
        return (salt, text, max_new_tokens, tuple(stop or ()), ignore_eos, logprobs, confidence)

    def answer(self, texts: list[str], max_new_tokens: int | None = None, stop: list[str] | None = None,
               cache_salt: str | None = None, ignore_eos: bool = False,
               logprobs: int | None = None, confidence: bool = False) -> list[Answer]:
        """Blocking: the answers for ``texts``, from the cache or through the batchers.

        ``stop``: the request's stop strings, on top of the task's; ``cache_salt``: answers are
        reused only among requests with the same salt (``EngineConfig.cache_scope``);
        ``ignore_eos``: a generation runs to its token budget (load generators ask for it);
        ``logprobs``: each answer's token log-probabilities, with this many alternatives each;
        ``confidence``: a free-text answer's ``Answer.confidence`` too (one more forward pass,
        as ``inference.predict(confidence=True)`` computes it; a label's is always there)."""
        check_top_logprobs(logprobs)
        fitted = [self.fit(t, max_new_tokens) for t in texts]
        texts, counts = [t for t, _ in fitted], [n for _, n in fitted]
        keys = [self._cache_key(t, max_new_tokens, stop, cache_salt, ignore_eos, logprobs, confidence) for t in texts]
        out: list[Answer | None] = [None] * len(texts)
        todo = []
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key) if key is not None else None
                if hit is not None:
                    self._cache.move_to_end(key)
                    out[i] = dataclasses.replace(hit, cached=True)
                else:
                    todo.append(i)
        if todo:
            runner = _Runner(self, len(todo), ignore_eos)
            spec = self.request_spec(max_new_tokens, stop)
            fresh = respond_with(runner, spec, [texts[i] for i in todo], self.shots, max_new_tokens)
            generated = spec.type != "classification"  # a label is a whole answer, never cut
            lps = [runner.logprobs(k, spec, logprobs) for k in range(len(todo))] if logprobs is not None else None
            sure = self._confidence(spec, runner, len(todo)) if confidence or spec.type == "classification" else None
            with self._lock:
                for k, (i, resp) in enumerate(zip(todo, fresh)):
                    out[i] = Answer(resp, counts[i], runner.completion_tokens[k],
                                    finish_reason=runner.finish[k] if generated else "stop",
                                    logprobs=lps[k] if lps is not None else None,
                                    confidence=sure[k] if sure else None)
                    if keys[i] is not None:
                        self._cache[keys[i]] = out[i]
                        while len(self._cache) > self.config.cache_size:
                            self._cache.popitem(last=False)
        return out  # type: ignore[return-value]

    def _confidence(self, spec: TaskSpec, runner: _Runner, n: int) -> list[float] | None:
        """Each answer's confidence (``TaskType.confidence``): a label's from its option scores,
        free text's from its tokens' mean log-probability after its prompt, as evaluation has it."""
        if runner.option_scores:
            pred = Predictions([], runner.option_scores, 0.0)
        else:
            prompts, answers = [g[0] for g in runner.generated[:n]], [g[2] for g in runner.generated[:n]]
            pred = Predictions(answers, None, 0.0, answer_logprobs=continuation_logprobs(
                self.model, self.tokenizer, prompts, answers))
        return tasktypes.get(spec.type).confidence(spec, pred)

    def _admit(self, n: int) -> None:
        if n > self.config.max_queue:  # it could never be admitted: retrying would not help
            raise ServingError(413, f"task {self.task!r}: {n} inputs in one request; at most "
                                    f"{self.config.max_queue} (max_queue) per request", param="inputs")
        with self._lock:
            if self._in_flight + n > self.config.max_queue:
                raise ServingError(
                    503, f"task {self.task!r} is at capacity ({self._in_flight} inputs in flight, "
                         f"max_queue {self.config.max_queue}); retry after {self.config.retry_after_s} s",
                    retry_after=self.config.retry_after_s)
            self._in_flight += n
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)

    def _release(self, n: int) -> None:
        with self._lock:
            self._in_flight -= n
            self._answered += n

    async def answer_async(self, texts: list[str], max_new_tokens: int | None = None,
                           stop: list[str] | None = None, cache_salt: str | None = None,
                           ignore_eos: bool = False, logprobs: int | None = None,
                           confidence: bool = False) -> list[Answer]:
        """``answer`` for an event loop (tokenizing and prompt building run in the engine's
        threads, off the loop): bounded admission (413, 503), a deadline (504)."""
        self._admit(len(texts))
        fut = self._pool.submit(self.answer, texts, max_new_tokens, stop, cache_salt, ignore_eos, logprobs,
                                confidence)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), self.config.deadline_s)
        except asyncio.TimeoutError:
            raise ServingError(504, f"task {self.task!r}: no answer within the deadline of "
                                    f"{self.config.deadline_s} s") from None
        finally:
            # released when the work ends, not when the caller gives up: the queue bound holds
            fut.add_done_callback(lambda _: self._release(len(texts)))

    # ---- streaming (generation tasks) ------------------------------------------------
    @staticmethod
    def _eos(ignore_eos: bool) -> dict:
        return {"eos_token_id": -1} if ignore_eos else {}  # -1: the continuous batch stops at no token

    def stream_tokens(self, prompt: str, max_new_tokens: int, ignore_eos: bool = False):
        """Blocking generator: the cumulative generated token ids after each step of the
        continuous batch, for one prompt (the request joins the same batch as the others)."""
        rid = f"{self.task}-{next(self._ids)}"
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._streams[rid] = q
        self._manager.add_request(encode(self.tokenizer, prompt), request_id=rid,
                                  max_new_tokens=max_new_tokens, streaming=True, **self._eos(ignore_eos))
        deadline = time.monotonic() + self.config.deadline_s
        finished = False
        try:
            while True:
                try:
                    out = q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise ServingError(504, f"task {self.task!r}: no generation within the deadline of "
                                            f"{self.config.deadline_s} s") from None
                if isinstance(out, Exception):
                    raise out
                if out.error:
                    raise ServingError(500, f"task {self.task!r}: generation failed ({out.error})")
                finished = out.is_finished()
                yield list(out.generated_tokens)
                if finished:
                    return
        finally:
            if not finished:  # the client left or the stop rule ended it: free its KV blocks
                with self._lock:
                    self._streams.pop(rid, None)
                self._manager.cancel_request(rid)

    def stream_text(self, text: str, max_new_tokens: int | None = None, stop: list[str] | None = None,
                    ignore_eos: bool = False):
        """Blocking generator of text deltas for a generation task's raw input: the same prompt,
        output budget and stop rule as the answered request, so the deltas join up to its
        ``generated`` text. The last item is the final :class:`Answer`, the task type's response
        to the streamed tokens (``respond_with``, as ``answer`` gives it)."""
        if self.spec.type != "generation":
            raise bad_request(f"stream: task {self.task!r} is {self.spec.type}; only generation tasks "
                              "stream (send stream=false)", param="stream")
        text, n_prompt = self.fit(text, max_new_tokens)
        spec = self.request_spec(max_new_tokens, stop)
        prompt = build_prompt(spec, {spec.input_field: text}, self.shots)
        stop = stop_strings(spec, tasktypes.get(spec.type).stop)
        sent, tokens = "", []
        steps = self.stream_tokens(prompt, spec.max_new_tokens, ignore_eos)
        try:
            for tokens in steps:
                so_far = self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
                if any(s in so_far for s in stop):
                    break  # the answer is complete; the rest would be cut
                # hold back what the final strip may remove, and half-decoded characters
                ready = so_far.rstrip()
                if ready.endswith("\ufffd") or not ready.startswith(sent):
                    continue
                if len(ready) > len(sent):
                    yield ready[len(sent):]
                    sent = ready
        finally:
            steps.close()  # stops (cancels) the request when the stop rule ended it early
        runner = _Runner(self, 1, ignore_eos, replay=[list(tokens)])
        response = respond_with(runner, spec, [text], self.shots, max_new_tokens)[0]
        final = response["generated"]
        if final.startswith(sent) and len(final) > len(sent):
            yield final[len(sent):]
        with self._lock:
            self._answered += 1
        yield Answer(response, n_prompt, runner.completion_tokens[0], finish_reason=runner.finish[0])

    async def stream_async(self, text: str, max_new_tokens: int | None = None, stop: list[str] | None = None,
                           ignore_eos: bool = False):
        """``stream_text`` for an event loop: bounded admission (503), the deltas as they come.
        A consumer that stops early (a client gone) cancels the request and frees its KV blocks."""
        self._admit(1)
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        done, cancelled = object(), threading.Event()

        def run() -> None:
            items = self.stream_text(text, max_new_tokens, stop, ignore_eos)
            try:
                for item in items:
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(out.put_nowait, item)
            except Exception as e:  # handed to the caller, raised there
                loop.call_soon_threadsafe(out.put_nowait, e)
            finally:
                items.close()  # cancels the request if it did not finish
                loop.call_soon_threadsafe(out.put_nowait, done)

        fut = self._pool.submit(run)
        fut.add_done_callback(lambda _: self._release_stream())
        try:
            while True:
                item = await out.get()
                # deltas that piled up while the consumer was busy go out as one: under load the
                # chunk count (each one a trip through the graph and the socket) stays bounded
                while isinstance(item, str) and not out.empty():
                    nxt = out.get_nowait()
                    if not isinstance(nxt, str):
                        yield item
                        item = nxt
                        break
                    item += nxt
                if item is done:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancelled.set()

    def _release_stream(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def card(self) -> dict:
        """What ``/v1/models`` says about this task's model."""
        meta = self.bundle.meta
        return {"id": self.task, "object": "model", "owned_by": "rightsizer", "status": "ready",
                "task_type": self.spec.type, "base_model": meta.get("base_model"),
                "precision": self.bundle.precision, "context_tokens": self.context_tokens,
                "max_tokens": self.max_tokens_cap, "labels": list(self.spec.labels) or None,
                # how much batching the server formed: peak_in_flight stays 1 when requests
                # reach the engine one at a time
                "stats": {"in_flight": self._in_flight, "peak_in_flight": self._peak_in_flight,
                          "answered": self._answered}}
