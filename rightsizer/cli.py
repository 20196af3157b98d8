"""Command line: ``python -m rightsizer size|recommend|gpus|plan``.

With ``--json`` each command prints exactly one JSON object on stdout (stable keys, see
docs/sizing.md). Exit codes: 0 success, 2 bad input (ConfigError), 3 no feasible option
(NoFeasibleOption / InsufficientMemory; with --json the object has "error" and "options").

Subcommands register themselves through ``SUBCOMMANDS``; add one with
``register(name, add_arguments, run, help)`` before ``main`` runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rightsizer.units import gib
from rightsizer.errors import ConfigError, NoFeasibleOption
from rightsizer.precisions import PRECISION_TABLE, SEARCH_ORDER

EXIT_OK, EXIT_CONFIG, EXIT_NO_OPTION = 0, 2, 3


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(name: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int], help: str = "") -> None:
    """Add a subcommand (e.g. ``demo``) to the CLI."""
    SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, run)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), indent=2, sort_keys=False, allow_nan=False))


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _common_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config.json path, model directory, or hub id")
    p.add_argument("--prompt-tokens", type=_positive_int, required=True, help="input tokens per request")
    p.add_argument("--output-tokens", type=_positive_int, required=True, help="generated tokens per request")
    p.add_argument("--batch", type=_positive_int, default=1, help="concurrent sequences (default 1)")
    p.add_argument("--kv-precision", default=None, help="KV-cache dtype (default: activation dtype)")
    p.add_argument("--catalog", default=None, help="GPU catalog YAML (default: packaged)")
    p.add_argument("--price-list", default=None, help="price list name or YAML path (default aws-on-demand-us-east-1)")
    p.add_argument("--calibration", default=None, help="calibration JSON from fit_calibration (Factors.save)")
    p.add_argument("--roofline", action="store_true", help="pure roofline: 100%% efficiency, no overhead")
    _engine_arg(p)
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD",
                   help="override a GPU's price per hour (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--serving-engine", default=None, metavar="NAME",
                   help="whose host costs (per step, per request) to size with: an engine of the factors' "
                        "engine_host_costs (vllm-0.19, vllm-0.23, vllm-unstated) or none; default: the "
                        "packaged defaults (none: the GPU's work alone)")


def _with_engine(factors, args):
    from rightsizer.sizing.calibration import factors_for_engine

    return factors_for_engine(getattr(args, "serving_engine", None), factors)


def _price_overrides(args) -> list[dict]:
    extra, problems = [], []
    for item in getattr(args, "price", []) or []:
        name, _, value = item.partition("=")
        try:
            extra.append({"name": name.strip(), "price_per_hour": float(value)})
        except ValueError:
            problems.append(f"--price expects GPU=USD, got {item!r}")
    if problems:
        raise ConfigError(problems)
    return extra


def _catalog_and_factors(args):
    from rightsizer.sizing import Factors, load_catalog
    from rightsizer.sizing.prices import DEFAULT_PRICE_LIST

    extra = _price_overrides(args)
    catalog = load_catalog(getattr(args, "catalog", None), extra=extra,
                           price_list=getattr(args, "price_list", None) or DEFAULT_PRICE_LIST)
    if getattr(args, "roofline", False):
        factors = Factors.roofline()
    elif getattr(args, "calibration", None):
        factors = Factors.load(args.calibration)
    else:
        factors = Factors.defaults(catalog)
    return catalog, _with_engine(factors, args)


# --------------------------------------------------------------------------- size


def _size_args(p: argparse.ArgumentParser) -> None:
    _common_model_args(p)
    p.add_argument("--gpu", required=True, help="GPU name from the catalog (see `gpus`)")
    p.add_argument("--precision", default="bf16", help=f"weights: {', '.join(PRECISION_TABLE)}, int4-gN")
    p.add_argument("--count", type=_positive_int, default=1, help="GPUs in tensor parallel (default 1)")
    p.add_argument("--mig", default=None, help="MIG profile, e.g. 3g.40gb")
    p.add_argument("--ops", action="store_true", help="include the per-operation breakdown")
    _traffic_args(p, "mean and p95 TTFT and TPOT at that rate, simulated through the engine's scheduler")


def _traffic_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--request-rate", type=float, default=None, metavar="R",
                   help=f"requests/s arriving at random (Poisson): {what}")
    p.add_argument("--lengths", default=None, metavar="FILE",
                   help="with --request-rate: a JSON or YAML length histogram ({histogram: [[prompt, output, "
                        "count], ...]}, as a decision record's workload.lengths); default: the fixed "
                        "--prompt-tokens / --output-tokens")


def _traffic_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with ``--request-rate`` / ``--lengths``."""
    problems = []
    rate = args.request_rate
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        problems.append(f"--request-rate must be a positive number of requests/s, got {rate}")
    if args.lengths and rate is None:
        problems.append("--lengths needs --request-rate (the lengths are only used by the traffic simulation)")
    return problems


def _load_lengths(path: str):
    from rightsizer.sizing.traffic import Lengths
    from rightsizer.yamlio import read_yaml

    data = read_yaml(path, "length histogram")  # JSON is YAML
    if isinstance(data, dict) and isinstance(data.get("lengths"), dict):  # a whole workload section
        data = data["lengths"]
    return Lengths.from_dict(data, where=path)


def _size_run(args: argparse.Namespace) -> int:
    from rightsizer.sizing import Workload, estimate
    from rightsizer.sizing.estimate import tail
    from rightsizer.sizing.traffic import Lengths

    catalog, factors = _catalog_and_factors(args)
    problems: list[str] = []
    gpu = wl = None
    try:
        gpu = catalog.get(args.gpu)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        wl = Workload(args.prompt_tokens, args.output_tokens, args.batch, args.precision, args.kv_precision)
    except ConfigError as exc:
        problems.extend(exc.problems)
    rate = args.request_rate
    problems.extend(_traffic_problems(args))
    if problems:
        raise ConfigError(problems)
    lengths = _load_lengths(args.lengths) if args.lengths else None
    est = estimate(args.config, gpu, wl, count=args.count, mig=args.mig, factors=factors, catalog=catalog)
    at_rate = tail(est, rate, lengths) if rate is not None else None
    if args.json:
        out = est.to_dict(with_ops=args.ops)
        if at_rate is not None:
            out.update({k: v for k, v in at_rate.to_dict().items()})
            out["lengths"] = (lengths or Lengths.fixed(wl.prompt_tokens, wl.output_tokens)).to_dict()
        _print_json(out)
        return EXIT_OK
    dev = f"{est.gpu} MIG {est.mig}" if est.mig else f"{est.count}x {est.gpu}"
    print(f"{est.model} ({est.architecture}) on {dev}, {est.precision} weights, {est.kv_precision} KV [{est.mode}]")
    print(f"  params            {est.params.total:,} total, {est.params.active:,} active")
    print(f"  weights           {gib(est.weights_bytes)}")
    print(f"  KV cache          {est.kv_bytes_per_token:,} B/token, {gib(est.kv_bytes)} for batch {est.batch}")
    print(f"  memory per GPU    {gib(est.memory_per_gpu_bytes)} of {gib(est.gpu_memory_bytes)} -> "
          f"{'fits' if est.fits else 'DOES NOT FIT'}; min GPUs {est.min_gpus}; max batch {est.max_batch}; "
          f"max context {est.max_context:,}")
    for ph in (est.prefill, est.decode):
        print(f"  {ph.name:<8}          {ph.flops:.3g} FLOP, {ph.bytes:.3g} B, AI {ph.arithmetic_intensity:.1f} "
              f"(ridge {ph.threshold:.0f}) {ph.bound}-bound, {ph.latency_ms:.2f} ms")
    print(f"  TTFT {est.ttft_ms:.1f} ms, TPOT {est.tpot_ms:.2f} ms (batch {est.batch}), "
          f"{est.throughput_tokens_per_s:,.0f} tok/s with {est.batch} in flight, "
          f"${est.price_per_hour:.2f}/h, ${est.cost_per_1m_output_tokens:.2f} per 1M output tokens")
    if est.serving is not None:
        s = est.serving
        b = s.best
        print(f"  max throughput    {est.max_throughput_tokens_per_s:,.0f} output tok/s at {b.batch} in flight "
              f"(continuous batching, {s.token_budget:,}-token steps; limited by {s.limit}); there TTFT "
              f"{b.ttft_ms:,.0f} ms, TPOT {b.tpot_ms:.2f} ms")
    if at_rate is not None:
        f = at_rate
        print(f"  at {f.request_rate:g} req/s (Poisson, {'fixed lengths' if lengths is None else args.lengths}): "
              f"TTFT mean {f.ttft_mean_ms:,.1f} / p95 {f.ttft_p95_ms:,.1f} ms, TPOT mean {f.tpot_mean_ms:.2f} / "
              f"p95 {f.tpot_p95_ms:.2f} ms, {f.mean_running:.1f} in flight"
              + ("; SATURATED: requests arrive faster than this option serves them" if f.saturated else ""))
    for w in est.warnings:
        print(f"  warning: {w}")
    return EXIT_OK


# --------------------------------------------------------------------------- recommend


def _recommend_args(p: argparse.ArgumentParser) -> None:
    _common_model_args(p)
    p.add_argument("--ttft-ms", type=float, required=True, help="p95 time-to-first-token target")
    p.add_argument("--tpot-ms", type=float, required=True, help="p95 time-per-output-token target")
    p.add_argument("--throughput", type=float, default=0.0, help="aggregate output tokens/s to sustain")
    p.add_argument("--budget-per-hour", type=float, default=None, help="USD per hour ceiling")
    p.add_argument("--precisions", default=None, help=f"comma list (default {','.join(SEARCH_ORDER)})")
    p.add_argument("--gpus", default=None, help="comma list of GPU names to consider (default: all)")
    p.add_argument("--no-mig", action="store_true", help="do not consider MIG slices")
    p.add_argument("--top", type=int, default=15, help="rows of the ranking to print (text mode)")
    _traffic_args(p, "every option must hold that rate within the p95 TTFT and TPOT targets (replicas "
                     "added until one replica holds its share)")


def _recommend_run(args: argparse.Namespace) -> int:
    from rightsizer.sizing import SLO, Traffic, Workload, recommend

    if problems := _traffic_problems(args):
        raise ConfigError(problems)
    catalog, factors = _catalog_and_factors(args)
    wl = Workload(args.prompt_tokens, args.output_tokens, args.batch, "bf16", args.kv_precision)
    slo = SLO(args.ttft_ms, args.tpot_ms, args.throughput, args.budget_per_hour)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()] if args.precisions else None
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    try:
        traffic = (Traffic(args.request_rate, _load_lengths(args.lengths) if args.lengths else None)
                   if args.request_rate is not None else None)
        rec = recommend(args.config, wl, slo, catalog=catalog, precisions=precisions, factors=factors, gpus=gpus,
                        include_mig=not args.no_mig, traffic=traffic)
    except NoFeasibleOption as exc:
        options = getattr(exc, "options", [])
        if args.json:
            _print_json({"error": str(exc), "kind": type(exc).__name__, "chosen": None,
                         "options": [o.to_dict() for o in options]})
        else:
            print(f"no feasible option: {exc}", file=sys.stderr)
        return EXIT_NO_OPTION
    if args.json:
        _print_json(rec.to_dict())
        return EXIT_OK
    c = rec.chosen
    print(f"{rec.model}: {slo.describe()}"
          + (f", at {args.request_rate:g} requests/s arriving at random" if args.request_rate else ""))
    print(f"chosen: {c.label}, batch {c.batch}, TTFT {c.ttft_ms:.1f} ms, TPOT {c.tpot_ms:.2f} ms, "
          f"{c.throughput_tokens_per_s:,.0f} tok/s, ${c.price_per_hour:.2f}/h, "
          f"${c.cost_per_1m_output_tokens:.2f}/1M output tokens [{c.mode}]"
          + (f"; one replica holds {c.held_rate_per_replica:.3g} requests/s within the p95 targets"
             if c.held_rate_per_replica else ""))
    print(f"\n{'#':>3}  {'option':<40} {'$/h':>7} {'TTFT ms':>9} {'TPOT ms':>8} {'tok/s':>8} {'$/1M':>8}  verdict")
    for row in rec.to_rows()[: args.top]:
        verdict = "ok" if row["feasible"] else row["reason"]
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        print(f"{row['rank']:>3}  {row['option']:<40} {row['price_per_hour']:>7.2f} {f(row['ttft_ms'], '9.1f')} "
              f"{f(row['tpot_ms'], '8.2f')} {f(row['throughput_tokens_per_s'], '8.0f')} "
              f"{f(row['cost_per_1m_output_tokens'], '8.2f')}  {verdict}")
    return EXIT_OK


# --------------------------------------------------------------------------- gpus


def _gpus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", default=None, help="GPU catalog YAML (default: packaged)")
    p.add_argument("--price-list", default=None, help="price list name or YAML path (default aws-on-demand-us-east-1)")
    p.add_argument("--price", action="append", default=[], metavar="GPU=USD", help="override a price")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _gpus_run(args: argparse.Namespace) -> int:
    catalog, _ = _catalog_and_factors(args)
    if args.json:
        _print_json({"source": catalog.source, "price_list": catalog.price_list.summary() if catalog.price_list
                     else None, "gpus": [g.to_dict() for g in catalog], "cpus": [c.to_dict() for c in catalog.cpus]})
        return EXIT_OK
    print(f"{'GPU':<11} {'memory':>10} {'BW GB/s':>8} {'bf16 TF':>8} {'fp8 TF':>7} {'CC':>4} {'$/h':>7}  "
          f"{'features':<40} MIG")
    for g in catalog:
        feats = ",".join(k for k, v in g.features.items() if v and k != "mig")
        print(f"{g.name:<11} {gib(g.memory_bytes):>10} {g.memory_bandwidth / 1e9:>8.0f} "
              f"{(g.bf16_flops or g.fp16_flops) / 1e12:>8.0f} {g.fp8_flops / 1e12:>7.0f} "
              f"{g.compute_capability or '-':>4} {_price(g):>7}  {feats:<40} "
              f"{' '.join(p.name for p in g.mig_profiles) or '-'}")
    for c in catalog.cpus:
        print(f"{c.name:<11} {gib(c.memory_bytes):>10} {c.memory_bandwidth / 1e9:>8.0f} "
              f"{c.bf16_flops / 1e12:>8.1f} {'-':>7} {'cpu':>4} {_price(c):>7}  {c.vcpus} vCPUs")
    print(f"prices: {catalog.price_list_name or 'none'} (- : not offered under this list)")
    return EXIT_OK


def _price(d) -> str:
    return f"{d.price_per_hour:.3f}" if d.priced else "-"


# --------------------------------------------------------------------------- plan


def _plan_args(p: argparse.ArgumentParser) -> None:
    from rightsizer.plan.pack import DEFAULT_HEADROOM

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--decisions",
                     help="decision records: an artifact root, the report's decisions.json, a record or a folder")
    src.add_argument("--app", help="an app spec whose task specs name their planned model (plan: {model, "
                                   "precision}): planned from the configs, no weights, quality not measured")
    p.add_argument("--price-list", default=None, help="price list name or YAML path (default aws-on-demand-us-east-1)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help=f"busy fraction each device may reach (default {DEFAULT_HEADROOM:g})")
    p.add_argument("--solver", default="auto", choices=("auto", "milp", "ffd"),
                   help="auto: exact milp up to 12 models, else greedy ffd")
    p.add_argument("--price", action="append", default=[], metavar="DEVICE=USD", help="override a price (repeatable)")
    p.add_argument("--devices", default=None, help="comma list of catalog devices to consider (default: all priced)")
    p.add_argument("--no-cpu", action="store_true", help="do not consider CPU instance types")
    p.add_argument("--no-mig", action="store_true", help="do not consider MIG slices")
    p.add_argument("--no-baseline", action="store_true", help="do not plan the one-big-model baseline fleet")
    p.add_argument("--mixed-devices", action="store_true",
                   help="also plan the fleet with a task's traffic split by prompt length across device types where "
                        "that costs less (Mélange; tasks with a length histogram)")
    p.add_argument("--calibration", default=None, help="calibration JSON from fit_calibration (Factors.save)")
    _engine_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object: the plan and its function specs")


def _plan_run(args: argparse.Namespace) -> int:
    from rightsizer.plan import fleet as fleet_mod
    from rightsizer.plan import load_decisions, plan_app, plan_fleet
    from rightsizer.sizing import Factors
    from rightsizer.sizing.prices import DEFAULT_PRICE_LIST

    prices = {e["name"]: e["price_per_hour"] for e in _price_overrides(args)}
    factors = _with_engine(Factors.load(args.calibration) if args.calibration else Factors.defaults(), args)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    kwargs = dict(price_list=args.price_list or DEFAULT_PRICE_LIST, headroom=args.headroom, solver=args.solver,
                  factors=factors, prices=prices or None, include_cpu=not args.no_cpu, include_mig=not args.no_mig,
                  devices=devices, baseline=not args.no_baseline, mixed_devices=args.mixed_devices)
    decisions = None if args.app else load_decisions(args.decisions)
    try:
        plan = plan_app(args.app, **kwargs) if args.app else plan_fleet(decisions, **kwargs)
    except NoFeasibleOption as exc:
        if args.json:
            _print_json({"error": str(exc), "kind": type(exc).__name__, "groups": None})
        else:
            print(f"no feasible fleet: {exc}", file=sys.stderr)
        return EXIT_NO_OPTION
    source = {"app": args.app} if args.app else {"decisions": args.decisions}
    if args.json:
        _print_json({"input": source, **plan.to_dict(), "function_specs": plan.function_specs()})
        return EXIT_OK
    for fleet in (plan, plan.baseline):
        if fleet is None:
            continue
        t = fleet.totals()
        print(f"{fleet.side} fleet [{fleet.price_list.get('name')}, solver {fleet.solver}, headroom "
              f"{fleet.headroom:g}]: {t['devices']} devices, ${t['cost_per_hour']:.3f}/h, "
              f"${t['cost_per_1m_output_tokens']:.4f} per 1M output tokens")
        for g in fleet.groups:
            print(f"  {g.name:<28} {g.label:<28} x{g.replicas}  ${g.cost_per_hour:.3f}/h  memory "
                  f"{gib(g.memory_used_bytes)} of {gib(g.memory_capacity_bytes)}, busy {g.busy_per_replica:.2f}")
            if g.holds:
                print(f"    {fleet_mod.holds_line(g.holds)}")
            for pl in g.placements:
                print(f"    {pl.name:<24} {pl.model} {pl.precision} batch {pl.batch}: busy {pl.busy_fraction:.3f}, "
                      f"TTFT {pl.ttft_shared_ms:.1f} ms, TPOT {pl.tpot_shared_ms:.2f} ms shared")
        for note in fleet.notes:
            print(f"  note: {note}")
    if plan.baseline_error:
        print(f"baseline fleet: {plan.baseline_error}")
    if args.mixed_devices:
        print(f"\nmixed device types: {plan.mixed_note}")
        if plan.mixed is not None:
            for g in plan.mixed.groups:
                print(f"  {g.name:<28} {g.label:<28} x{g.replicas}  ${g.cost_per_hour:.3f}/h  "
                      + ", ".join(p.name for p in g.placements))
            print("  the plan step deploys it where the project param deploy_mixed_devices is true (the entry point "
                  "routes a split task's requests by their input length)")
    print()
    for line in _fleet_table(plan):
        print(line)
    comp = plan.comparison()
    if comp and comp["saving"] is not None:
        print(f"saving vs baseline: {comp['saving']:.1%}")
    return EXIT_OK


def _fleet_devices(fleet) -> str:
    """'2: H100-SXM MIG 1g.20gb, A100-40GB MIG 1g.10gb': how many GPUs, slices or instances, and which."""
    n = sum(g.count * g.replicas for g in fleet.groups)
    return f"{n}: " + ", ".join(g.label if g.replicas == 1 else f"{g.replicas} x {g.label}" for g in fleet.groups)


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]


def _fleet_table(plan) -> list[str]:
    """The chosen fleet beside the baseline fleet (totals), then where each task runs."""
    fleets = [plan] + ([plan.baseline] if plan.baseline is not None else [])
    header = [""] + [f"{f.side} fleet" for f in fleets]
    ts = [f.totals() for f in fleets]
    rows = [["devices (GPUs, MIG slices, CPU instances)"] + [_fleet_devices(f) for f in fleets],
            ["$/hour"] + [f"{t['cost_per_hour']:.3f}" for t in ts],
            ["$ per 1M output tokens"] + [f"{t['cost_per_1m_output_tokens']:.4f}" for t in ts],
            ["memory used / held"] + [f"{t['memory_used_bytes'] / 2**30:.1f} / {t['memory_bytes'] / 2**30:.1f} GiB"
                                      for t in ts]]
    out = _table(header, rows) + [""]
    task_header = ["task"] + [f"{f.side}: device [group], model, precision" for f in fleets] + ["quality"]
    task_rows = []
    for d in plan.demands:
        row = [d.name]
        for f in fleets:
            try:
                g, p = f.placement_of(d.name if f is plan else "baseline")
            except KeyError:
                row.append("-")
                continue
            row.append(f"{g.label} [{g.name.split('-', 1)[0]}], {_short(p.model)} {p.precision}")
        q = plan.quality.get(d.name)
        if not q:
            row.append("-")
        else:
            value = f"{q['chosen']:.3f}" if q["measured"] else q["status"]
            bar = f" (bar {q['threshold']:g})" if isinstance(q.get("threshold"), (int, float)) else ""
            row.append(f"{q.get('metric') or 'quality'} {value}{bar}")
        task_rows.append(row)
    return out + _table(task_header, task_rows)


SCHEMAS = ("task", "app", "catalog", "prices")


def file_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a file people write: a task spec, an app spec, a GPU catalog or a
    price list (their types: ``rightsizer.schema``)."""
    from rightsizer.schema.catalog import CatalogFile, PriceListFile
    from rightsizer.schema.check import json_schema
    from rightsizer.sizing.prices import MIG_RULES
    from rightsizer.taskspec import app_schema, task_schema

    if kind == "task":
        return task_schema()
    if kind == "app":
        return app_schema()
    if kind == "catalog":
        return json_schema(CatalogFile, title="Rightsizer GPU catalog")
    if kind == "prices":
        return json_schema(PriceListFile, title="Rightsizer price list",
                           choices={"PriceListFile.mig_rule": list(MIG_RULES)})
    raise ConfigError(f"schema: {kind!r}; expected one of {list(SCHEMAS)}")


def _schema_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=SCHEMAS, help="which file: task spec, app spec, GPU catalog, price list")


def _schema_run(args: argparse.Namespace) -> int:
    _print_json(file_schema(args.kind))
    return EXIT_OK


register("size", _size_args, _size_run, "memory, roofline and latency of one model on one GPU option")
register("recommend", _recommend_args, _recommend_run, "cheapest GPU option meeting the SLOs")
register("gpus", _gpus_args, _gpus_run, "list the GPU catalog")
register("plan", _plan_args, _plan_run, "pack the tasks' models onto the cheapest devices (fleet plan)")
register("schema", _schema_args, _schema_run,
         "print the JSON Schema of a task spec, app spec, GPU catalog or price list (for editors)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rightsizer",
                                     description="Rightsizer: right-size LLM serving hardware.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in SUBCOMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args._run(args)
    except BrokenPipeError:  # e.g. piped into `head`
        return EXIT_OK
    except ConfigError as exc:
        if getattr(args, "json", False):
            _print_json({"error": str(exc), "kind": "ConfigError", "problems": exc.problems})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
