"""The size_gpu step's table: the device ranking with column names that say what they hold."""

from __future__ import annotations

from rightsizer.display import finite

# The sizing engine's option fields as table columns: modelled values, money in USD.
RANKING_NAMES = {"ttft_ms": "modelled_ttft_ms", "tpot_ms": "modelled_tpot_ms",
                 "throughput_tokens_per_s": "modelled_throughput_tokens_per_s",
                 "price_per_hour": "price_usd_per_hour",
                 "cost_per_1m_output_tokens": "cost_usd_per_1m_output_tokens",
                 "memory_bytes": "modelled_memory_bytes", "mode": "sizing_mode"}


def ranking_rows(rows: list[dict]) -> list[dict]:
    """The device ranking (``Recommendation.to_rows()``) with column names that say what
    they hold (modelled, USD); values rounded to what a reader compares."""
    out = []
    for r in rows:
        row = {RANKING_NAMES.get(k, k): v for k, v in r.items()}
        for k, digits in (("modelled_ttft_ms", 3), ("modelled_tpot_ms", 4), ("price_usd_per_hour", 4),
                          ("cost_usd_per_1m_output_tokens", 6), ("modelled_throughput_tokens_per_s", 1)):
            if finite(row.get(k)):
                row[k] = round(row[k], digits)
        out.append(row)
    return out


# The renamed columns in the order a reader compares devices (the report page's ranking table).
GPU_COLUMNS = ["rank", "option", "feasible", "modelled_ttft_ms", "modelled_tpot_ms",
               "modelled_throughput_tokens_per_s", "price_usd_per_hour", "cost_usd_per_1m_output_tokens",
               "modelled_memory_bytes", "sizing_mode", "reason"]
