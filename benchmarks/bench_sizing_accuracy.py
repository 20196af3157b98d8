"""Rightsizer's estimates beside public measurements and beside NVIDIA aiconfigurator's.

Rerun:  .venv/bin/python benchmarks/bench_sizing_accuracy.py            (table + mean absolute errors)
        .venv/bin/python benchmarks/bench_sizing_accuracy.py --fit      (refit the global factors on the fit rows)
        bash scripts/setup_aic.sh && .venv/bin/python benchmarks/bench_sizing_accuracy.py --run-aic
                                                                         (recompute aiconfigurator's column)

The rows, each with its source, are benchmarks/data/sizing_accuracy.yaml; held-out rows never
inform a factor. aiconfigurator's figures come from benchmarks/data/aic_estimates.json (written
by --run-aic through its own environment, .venv-aic, since it does not install beside mlrun);
rows it has no data or mapping for show "-". The op-data column is Rightsizer with its GEMMs timed
from aiconfigurator's measured tables (mode operator-data, opt-in). Prints figures only; tests/test_sizing_accuracy_data.py
holds the held-out errors to the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rightsizer.sizing import SLO, Factors, Workload, estimate, recommend  # noqa: E402
from rightsizer.sizing.accuracy import (  # noqa: E402
    DEFAULT_DATA, METRICS, SMALL_PARAMS, config_path, evaluate, fit_factors, fit_host_costs, load_rows, mean_abs_error,
    with_fitted)

AIC_RESULTS = ROOT / "benchmarks" / "data" / "aic_estimates.json"
AIC_PYTHON = ROOT / ".venv-aic" / "bin" / "python"
TARGETS = {"ttft_ms": 0.15, "max_throughput_tokens_per_s": 0.10, "tpot_ms": 0.15}
DEFAULT_ENGINE = "vllm-0.19"  # whose host costs are the packaged defaults
TARGETS_SMALL = {"ttft_ms": 0.20, "max_throughput_tokens_per_s": 0.15, "tpot_ms": 0.20}  # the 3 B class and under


def run_aic(rows) -> dict:
    """aiconfigurator's figure for every row, through its own environment; written to AIC_RESULTS."""
    if not AIC_PYTHON.exists():
        raise SystemExit(f"{AIC_PYTHON} is missing: run `bash scripts/setup_aic.sh` first")
    payload = [{k: v for k, v in asdict(r).items() if k not in ("value", "split", "source", "engine")} for r in rows]
    proc = subprocess.run([str(AIC_PYTHON), str(ROOT / "benchmarks" / "aic_estimate.py")], input=json.dumps(payload),
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"aic_estimate.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    results = json.loads(proc.stdout)
    tmp = AIC_RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, AIC_RESULTS)
    return {r["id"]: r for r in results}


def load_aic() -> dict:
    if not AIC_RESULTS.exists():
        return {}
    return {r["id"]: r for r in json.loads(AIC_RESULTS.read_text(encoding="utf-8"))}


def _err(pred: float | None, meas: float) -> float | None:
    return None if pred is None else pred / meas - 1


def _fmt(x: float | None, spec: str = "+.0%") -> str:
    return "-" if x is None else format(x, spec)


def timings() -> tuple[float, float]:
    cfg = str(config_path("llama-3.1-8b"))
    t = time.perf_counter()
    for _ in range(20):
        estimate(cfg, "H100-SXM", Workload(1000, 1000, 1, "fp8"))
    one = (time.perf_counter() - t) / 20 * 1e3
    t = time.perf_counter()
    recommend(cfg, Workload(1000, 200, 8, "bf16"), SLO(ttft_ms=500, tpot_ms=50))
    return one, (time.perf_counter() - t) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--fit", action="store_true", help="refit the global factors on the fit rows and use them")
    p.add_argument("--fit-host", action="store_true",
                   help="refit the host costs per serving engine (a source's host) on its fit rows and use them; "
                        f"the default engine's ({DEFAULT_ENGINE}) become the defaults")
    p.add_argument("--fit-names", default=None,
                   help="comma list of the factors --fit changes (default: all fittable; e.g. "
                        "host_step_ms,host_seq_us,front_end_ms for the host costs alone)")
    p.add_argument("--run-aic", action="store_true", help="recompute aiconfigurator's column (needs .venv-aic)")
    p.add_argument("--rows", action="store_true", help="print every row (default: the summary and the misses)")
    args = p.parse_args(argv)
    rows = load_rows(args.data)
    factors = Factors.defaults()
    if args.fit:
        t = time.perf_counter()
        names = args.fit_names.split(",") if args.fit_names else None
        values, loss = fit_factors(rows, factors, **({"names": names} if names else {}))
        print(f"fitted on {sum(r.split == 'fit' for r in rows)} fit rows in {time.perf_counter() - t:.0f} s "
              f"(mean abs log error per metric, summed: {loss:.3f}):")
        for k, v in values.items():
            print(f"  {k}: {v}")
        factors = with_fitted(factors, values)
    if args.fit_host:
        t = time.perf_counter()
        fitted = fit_host_costs(rows, factors)
        print(f"host costs fitted per serving engine in {time.perf_counter() - t:.0f} s (on each engine's fit rows):")
        for host, (values, loss) in fitted.items():
            n = sum(r.host == host and r.split == "fit" for r in rows)
            print(f"  {host}: {values} ({n} fit rows, mean abs log error per metric, summed: {loss:.3f})")
        factors = replace(factors, engine_host_costs={h: v for h, (v, _) in fitted.items()},
                          **fitted.get(DEFAULT_ENGINE, ({}, 0))[0])
    aic = run_aic(rows) if args.run_aic else load_aic()
    results = evaluate(rows, factors)
    # the same factors with GEMMs timed from aiconfigurator's measured tables where a GPU has one
    op_data = {r.row.id: r for r in evaluate(rows, replace(factors, operator_data=True))}

    print(f"\n{len(rows)} measurements from {len({r.source for r in rows})} sources ({args.data})")
    if aic:
        first = next(iter(aic.values()))
        print(f"aiconfigurator {first.get('aic_version', '?')} ({first.get('backend', '?')} "
              f"{first.get('backend_version', '')}), {sum(v.get('value') is not None for v in aic.values())} rows "
              f"with an estimate")
    header = f"{'row':58} {'split':8} {'measured':>10} {'rightsizer':>10} {'err':>6} {'aic':>10} {'err':>6}"
    shown = results if args.rows else sorted(results, key=lambda r: -abs(r.error))[:15]
    print("\n" + ("every row" if args.rows else "largest misses") + ":\n" + header)
    for r in shown:
        a = (aic.get(r.row.id) or {}).get("value")
        print(f"{r.row.id:58} {r.row.split:8} {r.row.value:10.1f} {r.predicted:10.1f} {r.error:+6.0%} "
              f"{_fmt(a, '10.1f'):>10} {_fmt(_err(a, r.row.value)):>6}")

    print(f"\n{'metric':30} {'models':7} {'split':8} {'rows':>4} {'rightsizer MAE':>15} {'target':>7} {'op-data':>8}   "
          f"{'rows with aic':>13} {'rightsizer':>10} {'aic':>6}")
    sizes = {"all": lambda r: True, "<= 3 B": lambda r: r.row.params < SMALL_PARAMS,
             "> 3 B": lambda r: r.row.params >= SMALL_PARAMS}
    for metric in METRICS:
        for size, keep in sizes.items():
            for split in ("fit", "held_out"):
                sel = [r for r in results if r.row.metric == metric and r.row.split == split and keep(r)]
                if not sel:
                    continue
                both = [r for r in sel if (aic.get(r.row.id) or {}).get("value") is not None]
                aic_mae = (sum(abs(_err(aic[r.row.id]["value"], r.row.value)) for r in both) / len(both)) if both else None
                od = mean_abs_error([op_data[r.row.id] for r in sel])
                target = TARGETS_SMALL[metric] if size == "<= 3 B" else TARGETS[metric]
                print(f"{metric:30} {size:7} {split:8} {len(sel):4d} {mean_abs_error(sel):15.1%} {target:7.0%} "
                      f"{od:8.1%}   {len(both):13d} {_fmt(mean_abs_error(both) if both else None, '.1%'):>10} "
                      f"{_fmt(aic_mae, '.1%'):>6}")
    one, rec = timings()
    print(f"\nspeed: one estimate {one:.1f} ms (target < 50), a whole-catalog recommendation {rec:.0f} ms "
          "(target < 1000)")
    print("rerun: .venv/bin/python benchmarks/bench_sizing_accuracy.py [--rows] [--fit] [--run-aic]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
