"""CLI: stable JSON output, exit codes, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rightsizer.cli import EXIT_CONFIG, EXIT_NO_OPTION, build_parser, main, register

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
LLAMA8 = str(CONFIGS / "llama-3.1-8b.json")
SIZE_KEYS = {"params_total", "params_active", "weights_bytes", "kv_bytes_per_token", "prefill", "decode", "ttft_ms",
             "tpot_ms", "throughput_tokens_per_s", "fits", "min_gpus", "mode", "gpu", "count", "precision",
             "memory_bytes", "cost_per_1m_output_tokens", "price_per_hour", "max_batch", "max_context", "offload"}
PHASE_KEYS = {"flops", "bytes", "arithmetic_intensity", "bound", "latency_ms"}


def run_json(capsys, *argv) -> tuple[int, dict]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_size_json(capsys):
    code, d = run_json(capsys, "size", "--config", LLAMA8, "--gpu", "A100-80GB", "--precision", "bf16",
                       "--prompt-tokens", "512", "--output-tokens", "128", "--batch", "4", "--json")
    assert code == 0
    assert SIZE_KEYS <= set(d)
    assert PHASE_KEYS <= set(d["prefill"]) and PHASE_KEYS <= set(d["decode"])
    assert d["params_total"] == 8_030_261_248 and d["kv_bytes_per_token"] == 131_072 and d["batch"] == 4
    assert d["fits"] is True and d["min_gpus"] == 1 and d["decode"]["bound"] == "memory"
    assert "ops" not in d["decode"]


def test_size_mig_ops_roofline_and_price(capsys):
    code, d = run_json(capsys, "size", "--config", LLAMA8, "--gpu", "H100-SXM", "--mig", "3g.40gb", "--ops",
                       "--roofline", "--price", "H100-SXM=7", "--precision", "int4", "--prompt-tokens", "100",
                       "--output-tokens", "10", "--json")
    assert code == 0 and d["mig"] == "3g.40gb" and d["mode"] == "roofline"
    assert d["price_per_hour"] == pytest.approx(3)  # 3/7 of the overridden price
    assert {op["name"] for op in d["decode"]["ops"]} >= {"qkv_proj", "mlp", "lm_head"}


def test_recommend_json_chosen_first(capsys):
    code, d = run_json(capsys, "recommend", "--config", LLAMA8, "--prompt-tokens", "1000", "--output-tokens", "200",
                       "--ttft-ms", "500", "--tpot-ms", "30", "--throughput", "200", "--budget-per-hour", "5",
                       "--json")
    assert code == 0
    assert d["chosen"] == d["options"][0] and d["chosen"]["feasible"]
    assert d["chosen"]["price_per_hour"] <= 5 and d["chosen"]["throughput_tokens_per_s"] >= 200
    prices = [o["price_per_hour"] for o in d["options"] if o["feasible"]]
    assert prices == sorted(prices)


def test_recommend_no_option_exit_code_and_json(capsys):
    code, d = run_json(capsys, "recommend", "--config", str(CONFIGS / "llama-2-70b.json"), "--prompt-tokens", "100",
                       "--output-tokens", "10", "--ttft-ms", "1", "--tpot-ms", "1", "--json")
    assert code == EXIT_NO_OPTION and d["chosen"] is None and "no option meets" in d["error"]
    assert d["kind"] == "NoFeasibleOption" and d["options"]


def test_gpus_lists_catalog(capsys):
    code, d = run_json(capsys, "gpus", "--json")
    assert code == 0 and [g["name"] for g in d["gpus"]][:2] == ["T4", "A10G"] and len(d["gpus"]) == 10
    assert main(["gpus"]) == 0
    assert "MI300X" in capsys.readouterr().out


def test_text_output(capsys):
    assert main(["size", "--config", LLAMA8, "--gpu", "L4", "--prompt-tokens", "64", "--output-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "memory-bound" in out and "TPOT" in out
    assert main(["recommend", "--config", LLAMA8, "--prompt-tokens", "64", "--output-tokens", "8", "--ttft-ms",
                 "500", "--tpot-ms", "50", "--top", "3"]) == 0
    assert "chosen:" in capsys.readouterr().out


def test_bad_input_lists_every_problem(capsys):
    code = main(["size", "--config", LLAMA8, "--gpu", "X100", "--precision", "q3", "--prompt-tokens", "0",
                 "--output-tokens", "5"])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG and "Traceback" not in err
    assert "X100" in err and "T4" in err and "q3" in err and "prompt_tokens" in err
    code, d = run_json(capsys, "size", "--config", str(CONFIGS / "nope.json"), "--gpu", "L4", "--prompt-tokens",
                       "1", "--output-tokens", "1", "--json")
    assert code == EXIT_CONFIG and d["kind"] == "ConfigError"
    code, d = run_json(capsys, "recommend", "--config", LLAMA8, "--prompt-tokens", "1", "--output-tokens", "1",
                       "--ttft-ms", "-1", "--tpot-ms", "1", "--json")
    assert code == EXIT_CONFIG and "ttft_ms" in d["error"]


def test_subcommands_can_be_added():
    register("hello", lambda p: p.add_argument("--who", default="x"), lambda a: 0, "test command")
    try:
        args = build_parser().parse_args(["hello", "--who", "me"])
        assert args.who == "me" and args._run(args) == 0
    finally:
        from rightsizer import cli

        cli.SUBCOMMANDS.pop("hello")


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "rightsizer", "gpus", "--json"], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["gpus"][0]["name"] == "T4"
