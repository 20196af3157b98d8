"""The public serving measurements in benchmarks/data/sizing_accuracy.yaml are well formed:
every row names a known source, a loadable model config, a catalog GPU and a known precision,
and each metric has both fit and held-out rows. No network."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from rightsizer.precisions import get_precision
from rightsizer.sizing.catalog import default_catalog
from rightsizer.sizing.params import count_params, model_spec

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "sizing_accuracy.yaml"
CONFIG_DIRS = (ROOT / "tasks" / "examples" / "configs", ROOT / "benchmarks" / "data" / "configs")
METRICS = {"max_throughput_tokens_per_s", "ttft_ms", "tpot_ms"}
REQUIRED = ("id", "source", "where", "model", "gpu", "count", "precision", "prompt_tokens",
            "output_tokens", "metric", "value", "split")
OPTIONAL = ("kv_precision", "concurrency", "request_rate", "num_prompts", "stat", "lengths", "length_range")
SOURCE_FIELDS = ("title", "url", "retrieved", "engine", "notes")


@pytest.fixture(scope="module")
def data():
    with open(DATA, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def rows(data):
    return data["rows"]


def _config(model: str) -> Path | None:
    for d in CONFIG_DIRS:
        if (d / f"{model}.json").is_file():
            return d / f"{model}.json"
    return None


def test_sources_are_complete(data):
    assert data["sources"], "no sources"
    for sid, src in data["sources"].items():
        missing = [k for k in SOURCE_FIELDS if not src.get(k)]
        assert not missing, f"source {sid}: missing {missing}"
        assert str(src["url"]).startswith("https://"), sid


def test_rows_have_required_fields_only(rows):
    assert len(rows) >= 30
    for r in rows:
        missing = [k for k in REQUIRED if k not in r or r[k] in (None, "")]
        assert not missing, f"{r.get('id')}: missing {missing}"
        unknown = set(r) - set(REQUIRED) - set(OPTIONAL)
        assert not unknown, f"{r['id']}: unknown fields {sorted(unknown)}"


def test_ids_unique(rows):
    dup = [i for i, n in Counter(r["id"] for r in rows).items() if n > 1]
    assert not dup, f"duplicate ids: {dup}"


def test_sources_exist_and_are_used(data, rows):
    used = {r["source"] for r in rows}
    assert used <= set(data["sources"]), f"unknown sources: {used - set(data['sources'])}"
    assert set(data["sources"]) <= used, f"unused sources: {set(data['sources']) - used}"


def test_model_configs_exist_and_load(rows):
    for model in sorted({r["model"] for r in rows}):
        path = _config(model)
        assert path is not None, f"no config for {model} in {[str(d) for d in CONFIG_DIRS]}"
        assert count_params(model_spec(str(path))).total > 0, model


def test_gpus_in_catalog(rows):
    catalog = default_catalog()
    for r in rows:
        assert r["gpu"] in catalog.names, f"{r['id']}: {r['gpu']} is not a catalog name"


def test_precisions_known(rows):
    for r in rows:
        get_precision(r["precision"])
        if "kv_precision" in r:
            assert get_precision(r["kv_precision"]).kv_bytes, f"{r['id']}: {r['kv_precision']} is no KV dtype"


def test_values_and_shapes(rows):
    for r in rows:
        assert r["metric"] in METRICS, r["id"]
        assert isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool) and r["value"] > 0, r["id"]
        for k in ("count", "prompt_tokens", "output_tokens"):
            assert isinstance(r[k], int) and r[k] > 0, f"{r['id']}: {k}"
        if "request_rate" in r:  # open loop: a rate (inf: all at once) and how many requests, no concurrency
            assert r["request_rate"] > 0 and isinstance(r["num_prompts"], int) and r["num_prompts"] > 0, r["id"]
            assert "concurrency" not in r, f"{r['id']}: an open-loop row has a rate, not a concurrency"
            assert r.get("stat", "mean") in ("mean", "median", "p99") and r.get("lengths", "fixed") in ("fixed", "uniform")
        elif r["metric"] == "max_throughput_tokens_per_s":
            assert "concurrency" not in r, f"{r['id']}: max-throughput rows have no concurrency"
        else:
            assert isinstance(r.get("concurrency"), int) and r["concurrency"] >= 1, f"{r['id']}: concurrency"


def test_splits(rows):
    assert {r["split"] for r in rows} <= {"fit", "held_out"}
    for metric in METRICS:
        splits = Counter(r["split"] for r in rows if r["metric"] == metric)
        assert splits["fit"] and splits["held_out"], f"{metric}: {dict(splits)}"


def test_engine_settings_are_engine_factors_the_estimator_accepts(data):
    """A source's engine_settings say how its engine ran (KV admission, CUDA graphs), not how
    efficient the hardware is; they must be Factors fields the estimator validates."""
    from dataclasses import replace

    from rightsizer.sizing import Factors
    from rightsizer.sizing.accuracy import ENGINE_SETTINGS, load_rows

    seen = 0
    for sid, src in data["sources"].items():
        settings = src.get("engine_settings") or {}
        assert set(settings) <= set(ENGINE_SETTINGS), f"{sid}: {sorted(set(settings) - set(ENGINE_SETTINGS))}"
        replace(Factors.defaults(), **settings)  # raises ConfigError on a bad value
        seen += bool(settings)
    assert seen >= 2  # the TensorRT-LLM throughput pages
    rows = {r.id: r for r in load_rows(DATA)}
    assert dict(rows["trtllm013-h100-sxm-llama3.1-8b-fp8-tp1-1000-1000"].engine) == {
        "kv_output_share": 1.0, "decode_cuda_graphs": False}


def test_host_costs_belong_to_engines_the_factors_know(data):
    """A source's ``host`` names the serving engine whose host costs its rows are predicted
    with; a source through a server says so (its TTFT includes the server's time), the others
    ran vLLM's offline ``LLM`` class (no server)."""
    from rightsizer.sizing import Factors

    known = set(Factors.defaults().engine_host_costs)
    hosts = {sid: src.get("host") for sid, src in data["sources"].items()}
    assert {"vllm-0.19", "vllm-unstated"} <= known
    assert {h for h in hosts.values() if h} - known <= {"sglang", "vllm-0.21"}  # no fit rows: the defaults
    for sid, src in data["sources"].items():
        if src.get("host"):
            assert src.get("through_server") is True or "offline vllm.LLM" in src["engine"], sid
    assert not any(hosts[s] for s in ("trtllm-perf-0.13", "trtllm-perf-1.0", "trtllm-perf-0.9", "gpt-fast-readme"))


def test_a_kv_dtype_the_source_does_not_state_is_marked_as_assumed(data, rows):
    for r in rows:
        if r["source"] == "trtllm-perf-1.0":
            assert r.get("kv_precision") == "fp8", r["id"]
            assert "kv_precision fp8 assumed" in r["where"], r["id"]
