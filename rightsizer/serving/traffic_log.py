"""A record of served traffic: sampled requests and answers as JSON lines, bounded and rotated.

The serving graph writes one line per sampled answer (``functions/serving.py``) when
``$RIGHTSIZER_TRAFFIC_LOG`` names a file (``scripts/serve.sh --traffic-log PATH``): the task, the
model that answered, the input and the answer (cut at ``max_chars``), the latency, the token
counts, a cascade's deferral and a request id. Never a header, a key or anything else of the
request. The file rotates at ``max_bytes`` (``PATH.1`` ... ``PATH.<keep>``, the oldest dropped),
so the record stays bounded however long the server runs. On a cluster MLRun's model
monitoring records the traffic (``set_tracking``); this is the same record on any machine, and
what the served-source re-evaluation reads (``rightsizer.monitor``).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from rightsizer.errors import ConfigError

TRAFFIC_LOG_ENV = "RIGHTSIZER_TRAFFIC_LOG"  # the file; unset: nothing is recorded
TRAFFIC_SAMPLE_ENV = "RIGHTSIZER_TRAFFIC_SAMPLE"  # the share of answers recorded, (0, 1]; default 1
FIELDS = ("ts", "request_id", "task", "model", "input", "answer", "latency_ms", "prompt_tokens",
          "completion_tokens", "deferred")
MAX_BYTES = 16 * 2**20
KEEP = 3
MAX_CHARS = 4000


class TrafficLog:
    """Appends sampled answers to ``path`` (thread-safe), rotating at ``max_bytes``."""

    def __init__(self, path: str | os.PathLike, sample: float = 1.0, max_bytes: int = MAX_BYTES, keep: int = KEEP,
                 max_chars: int = MAX_CHARS, seed: int | None = None):
        if not (isinstance(sample, (int, float)) and 0 < sample <= 1):
            raise ConfigError(f"traffic log sample: {sample!r}; expected a share in (0, 1]")
        if max_bytes < 1024 or keep < 1:
            raise ConfigError(f"traffic log: max_bytes {max_bytes} (>= 1024) and keep {keep} (>= 1)")
        self.path = Path(path)
        self.sample, self.max_bytes, self.keep, self.max_chars = float(sample), int(max_bytes), int(keep), max_chars
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"traffic log {self.path}: cannot create its folder ({e})") from None

    @classmethod
    def from_env(cls) -> TrafficLog | None:
        """The log ``$RIGHTSIZER_TRAFFIC_LOG`` names, sampling ``$RIGHTSIZER_TRAFFIC_SAMPLE``; None unset."""
        path = os.environ.get(TRAFFIC_LOG_ENV, "").strip()
        if not path:
            return None
        raw = os.environ.get(TRAFFIC_SAMPLE_ENV, "1")
        try:
            sample = float(raw)
        except ValueError:
            raise ConfigError(f"{TRAFFIC_SAMPLE_ENV}={raw!r}; expected a share in (0, 1]") from None
        return cls(path, sample=sample)

    def record(self, *, task: str, model: str, input: str, answer: str, latency_ms: float,
               prompt_tokens: int | None = None, completion_tokens: int | None = None,
               deferred: bool | None = None, request_id: str | None = None) -> bool:
        """One answer, when the sample draws it: True when written."""
        if self.sample < 1 and self._rng.random() >= self.sample:
            return False
        row = {"ts": time.time(), "request_id": request_id or uuid.uuid4().hex, "task": task, "model": model,
               "input": str(input)[:self.max_chars], "answer": str(answer)[:self.max_chars],
               "latency_ms": round(float(latency_ms), 3), "prompt_tokens": prompt_tokens,
               "completion_tokens": completion_tokens, "deferred": deferred}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    self._rotate()
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError:  # a full disk must not take the answer down; the next write retries
                return False
        return True

    def _rotate(self) -> None:
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        if oldest.exists():
            oldest.unlink()
        for i in range(self.keep - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))


def log_files(path: str | os.PathLike) -> list[Path]:
    """The log and its rotated files, oldest first."""
    p = Path(path)
    rotated = sorted((q for q in p.parent.glob(f"{p.name}.*") if q.suffix[1:].isdigit()),
                     key=lambda q: -int(q.suffix[1:]))
    return rotated + ([p] if p.exists() else [])


def read_traffic(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every recorded answer, oldest first; a ConfigError naming the file and line for a line
    that is not a record, and for a log that does not exist or holds nothing."""
    files = log_files(path)
    if not files:
        raise ConfigError(f"no traffic log at {path} (serve with `scripts/serve.sh --traffic-log {path}` first)")
    seen = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{f}:{n}: not a JSON record ({e.msg})") from None
                missing = [k for k in ("task", "model", "input", "answer", "latency_ms") if not isinstance(row, dict)
                           or k not in row]
                if missing:
                    raise ConfigError(f"{f}:{n}: a traffic record without {', '.join(missing)}")
                seen += 1
                yield row
    if not seen:
        raise ConfigError(f"traffic log {path} holds no records")


__all__ = ["TrafficLog", "read_traffic", "log_files", "TRAFFIC_LOG_ENV", "TRAFFIC_SAMPLE_ENV", "FIELDS"]
