"""GPTQ/AWQ pre-quantization: input checks and the separate-environment function.

gptqmodel must not be in the main environment; here we check that everything fails early
and clearly, and leaves nothing behind. tests/test_gptq.py runs GPTQ for real in its own
environment.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows
from rightsizer.quantize_gptq import calibration_texts, check_method, main, prequantize
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def spec():
    return load_task(str(ROOT / "tasks" / "review_sentiment.yaml"))


def test_calibration_from_the_train_split_as_served(spec):
    rows = load_rows(spec, "train")
    texts = calibration_texts(rows, spec, samples=32)
    assert len(texts) == 32 and len(set(texts)) == 32
    assert texts[0].startswith("Review: ") and texts[0].rsplit(" ", 1)[-1] in spec.labels


@pytest.mark.parametrize("rows", [[], [{"text": "short"}] * 50, [{"text": "the same long sentence"}] * 50])
def test_too_small_calibration_set(rows):
    with pytest.raises(ConfigError) as e:
        calibration_texts(rows, text_field="text", samples=64, min_samples=16)
    assert str(e.value).startswith("calibration:") and "at least 16" in str(e.value)


def test_bad_calibration_sizes():
    with pytest.raises(ConfigError, match="min_samples"):
        calibration_texts([], min_samples=0)
    with pytest.raises(ConfigError, match="samples"):
        calibration_texts([], samples=4, min_samples=16)


def test_method_checks():
    assert check_method("gptq", 4, 128) == []
    problems = check_method("squeeze", 3, 100)
    assert len(problems) == 3 and problems[0].startswith("method")
    assert check_method("awq", 8, 128)[0].startswith("bits")


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is not None,
                    reason="gptqmodel is installed here; this checks the main environment without it")
def test_missing_package_is_a_clear_error_and_leaves_nothing(tmp_path):
    out = tmp_path / "models" / "q"
    with pytest.raises(ConfigError) as e:
        prequantize("some/model", ["a calibration text"] * 20, out, method="gptq")
    assert "gptqmodel" in str(e.value) and "requirements-gptq.txt" in str(e.value)
    assert not out.exists() and not (tmp_path / "models").exists()


def test_bad_input_is_rejected_before_anything_is_written(tmp_path):
    existing = tmp_path / "already"
    existing.mkdir()
    with pytest.raises(ConfigError) as e:
        prequantize("some/model", [], existing, method="gptq", bits=5)
    assert {p.split(":")[0] for p in e.value.problems} == {"bits", "calibration", "output_dir"}
    assert list(tmp_path.iterdir()) == [existing] and not any(existing.iterdir())


def test_cli_reads_texts_file(tmp_path):
    texts = tmp_path / "t.json"
    texts.write_text(json.dumps([]))
    with pytest.raises(ConfigError, match="calibration"):
        main(["--model-path", "m", "--texts", str(texts), "--output-dir", str(tmp_path / "o")])


def test_function_module_imports_without_gptq_packages(monkeypatch, tmp_path):
    import functions.quantize_gptq as fn

    cmds = fn.gptq_build_commands(venv="/opt/x")
    assert cmds[0] == "python -m venv /opt/x" and "'gptqmodel==7.6.0'" in cmds[1] and "'torch==2.13.0'" in cmds[1]
    monkeypatch.delenv("RIGHTSIZER_GPTQ_PYTHON", raising=False)
    monkeypatch.setattr(fn, "GPTQ_VENV", str(tmp_path / "none"))
    if importlib.util.find_spec("gptqmodel") is None:
        with pytest.raises(ConfigError, match="gptq_build_commands"):
            fn.gptq_python("gptq")
    monkeypatch.setenv("RIGHTSIZER_GPTQ_PYTHON", "/opt/gptq/bin/python")
    assert fn.gptq_python("gptq") == "/opt/gptq/bin/python"


# ------------------------------------------------------------ GPTQ tensors -> int4 kernel

def _pack_rows(vals):
    """Independent reference packer: eight 4-bit values per int32, lowest bits first, along rows."""
    import numpy as np

    v = np.asarray(vals, dtype=np.int64).reshape(-1, 8, vals.shape[1])
    words = sum(v[:, i, :] * (16 ** i) for i in range(8))
    return torch.from_numpy(words.astype(np.uint32).view(np.int32))


@pytest.mark.parametrize("fmt,act_order", [("gptq", False), ("gptq_v2", False), ("gptq", True)])
def test_gptq_tensors_convert_exactly(fmt, act_order):
    from rightsizer.runtime.gptq_format import gptq_to_int4pack

    torch.manual_seed(0)
    k, n, g = 128, 32, 32
    q = torch.randint(0, 16, (k, n))
    # v1 stores z - 1 in 4 bits, so it cannot hold z = 0 (asymmetric v1 files never have it)
    z = torch.randint(1 if fmt == "gptq" else 0, 16, (k // g, n))
    scales = torch.rand(k // g, n, dtype=torch.float16) * 0.1 + 0.01
    g_idx = torch.arange(k) // g
    if act_order:  # act-order: input features grouped out of order
        g_idx = g_idx[torch.randperm(k)]
    stored_z = z - 1 if fmt == "gptq" else z  # v1 files store z - 1
    qzeros = _pack_rows(stored_z.t().contiguous().numpy()).t()  # [K/G, N/8], packed along N
    bias = torch.randn(n)
    layer = gptq_to_int4pack(_pack_rows(q.numpy()), qzeros.contiguous(), scales, g_idx.to(torch.int32), g,
                             checkpoint_format=fmt, bias=bias, dtype=torch.float32)
    expected = (scales.float()[g_idx] * (q - z[g_idx]).float()).t()  # [N, K]
    assert torch.allclose(layer.dequantize(), expected, atol=1e-6)
    assert (layer.perm is not None) == act_order
    x = torch.randn(3, k)
    assert torch.allclose(layer(x), x @ expected.t() + bias, atol=1e-4)


def test_gptq_groups_of_unequal_size_are_refused():
    from rightsizer.runtime.gptq_format import gptq_to_int4pack

    k, n, g = 64, 8, 32
    g_idx = torch.zeros(k, dtype=torch.int32)  # every feature in group 0: not two groups of 32
    with pytest.raises(ConfigError, match="g_idx"):
        gptq_to_int4pack(_pack_rows(torch.zeros(k, n, dtype=torch.int64).numpy()),
                         torch.zeros(k // g, n // 8, dtype=torch.int32), torch.ones(k // g, n, dtype=torch.float16),
                         g_idx, g, name="layer")


def test_a_width_the_cpu_kernel_cannot_take_is_a_clear_error():
    from rightsizer.runtime.gptq_format import gptq_to_int4pack

    k, n, g = 64, 8, 32  # the CPU kernel packs 16 output rows at a time
    with pytest.raises(ConfigError, match="layer.3.mlp: .*multiple of 16"):
        gptq_to_int4pack(_pack_rows(torch.zeros(k, n, dtype=torch.int64).numpy()),
                         torch.zeros(k // g, n // 8, dtype=torch.int32), torch.ones(k // g, n, dtype=torch.float16),
                         None, g, name="layer.3.mlp")


def test_calibration_for_a_retrieval_rung_carries_its_passages(tmp_path, monkeypatch):
    """The GPTQ function calibrates on prompts as the chosen rung serves them."""
    from rightsizer import retrieval
    from rightsizer.quantize_gptq import served_calibration_texts

    monkeypatch.setattr(retrieval, "cache_dir", lambda: tmp_path / "retrieval")
    drafting = load_task(str(ROOT / "tasks" / "answer_drafting.yaml"))
    rows = load_rows(drafting, "train")
    plain = served_calibration_texts(drafting, rows, "few_shot", samples=16)
    served = served_calibration_texts(drafting, rows, "retrieval", samples=16)
    assert plain[0].startswith("Question: ") and "Context:" not in plain[0]
    assert served[0].startswith("Context:\n# ") and served[0].endswith(plain[0])
    # the row's own policy passage, as the served prompt has it
    assert retrieval.retrieve_for(retrieval.for_rung(drafting, "retrieval"), rows[0])[0].text in served[0]
