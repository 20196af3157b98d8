"""The served-traffic record: sampled, bounded and rotated, readable back in order, clear about
a corrupt line or a missing log; never more of a request than its input."""

from __future__ import annotations

import json
import threading

import pytest

from rightsizer.errors import ConfigError
from rightsizer.serving.traffic_log import FIELDS, TRAFFIC_LOG_ENV, TrafficLog, log_files, read_traffic


def _rec(log: TrafficLog, i: int, **kw) -> bool:
    return log.record(task="routing", model="demo:tiny-s", input=f"where is my parcel {i}", answer="shipping",
                      latency_ms=12.5, prompt_tokens=20, completion_tokens=2, **kw)


def test_records_read_back_in_order_with_only_the_record_fields(tmp_path):
    log = TrafficLog(tmp_path / "t.jsonl")
    for i in range(5):
        assert _rec(log, i, deferred=i % 2 == 0)
    rows = list(read_traffic(tmp_path / "t.jsonl"))
    assert [r["input"] for r in rows] == [f"where is my parcel {i}" for i in range(5)]
    assert all(set(r) == set(FIELDS) for r in rows) and len({r["request_id"] for r in rows}) == 5
    assert rows[0]["deferred"] is True and rows[1]["latency_ms"] == 12.5


def test_the_log_rotates_and_stays_bounded(tmp_path):
    path = tmp_path / "t.jsonl"
    log = TrafficLog(path, max_bytes=2048, keep=2)
    for i in range(200):
        _rec(log, i)
    files = log_files(path)
    assert [f.name for f in files] == ["t.jsonl.2", "t.jsonl.1", "t.jsonl"]
    assert all(f.stat().st_size <= 2048 for f in files)
    rows = list(read_traffic(path))
    numbers = [int(r["input"].rsplit(" ", 1)[1]) for r in rows]
    assert numbers == sorted(numbers) and numbers[-1] == 199 and numbers[0] > 0  # the oldest dropped


def test_sampling_keeps_about_its_share_and_long_texts_are_cut(tmp_path):
    log = TrafficLog(tmp_path / "t.jsonl", sample=0.25, seed=0, max_chars=50)
    kept = sum(_rec(log, i) for i in range(2000))
    assert 400 < kept < 600
    log.record(task="t", model="m", input="x" * 500, answer="y" * 500, latency_ms=1)
    last = list(read_traffic(tmp_path / "t.jsonl"))[-1]
    assert len(last["input"]) == 50 and len(last["answer"]) == 50


def test_concurrent_writers_leave_whole_lines(tmp_path):
    log = TrafficLog(tmp_path / "t.jsonl")
    threads = [threading.Thread(target=lambda k=k: [_rec(log, 100 * k + i) for i in range(100)]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(read_traffic(tmp_path / "t.jsonl"))) == 400


def test_bad_logs_and_settings_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no traffic log at .*missing.jsonl"):
        list(read_traffic(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no records"):
        list(read_traffic(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task": "a", "model": "m", "input": "i", "answer": "x", "latency_ms": 1}) + "\n{oops\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not a JSON record"):
        list(read_traffic(bad))
    bad.write_text(json.dumps({"task": "a"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: a traffic record without model, input, answer, latency_ms"):
        list(read_traffic(bad))
    with pytest.raises(ConfigError, match=r"sample: 0; expected a share in \(0, 1\]"):
        TrafficLog(tmp_path / "t.jsonl", sample=0)
    monkeypatch.setenv(TRAFFIC_LOG_ENV, str(tmp_path / "env.jsonl"))
    monkeypatch.setenv("RIGHTSIZER_TRAFFIC_SAMPLE", "half")
    with pytest.raises(ConfigError, match="RIGHTSIZER_TRAFFIC_SAMPLE='half'"):
        TrafficLog.from_env()
    monkeypatch.delenv(TRAFFIC_LOG_ENV)
    assert TrafficLog.from_env() is None
