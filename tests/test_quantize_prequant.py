"""GPTQ/AWQ pre-quantization: input checks and the separate-environment function.

gptqmodel must not be in the main environment; here we check that everything fails early
and clearly, and leaves nothing behind. tests/test_gptq.py runs GPTQ for real in its own
environment.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows
from rightsizer.quantize.prequant import calibration_texts, check_method, main, prequantize
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
