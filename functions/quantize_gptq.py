"""MLRun step ``quantize_gptq``: GPTQ/AWQ pre-quantization with calibration text.

Its own function and image: gptqmodel does not fit beside mlrun 1.12 in one environment, so
the image installs it into a second virtualenv (``gptq_build_commands``) and this handler,
running in the mlrun environment, launches the quantization there as a subprocess. Nothing
here imports gptqmodel. The size_and_deploy pipeline calls this step only when a GPU is
configured and hands its checkpoint to the ``quantize`` step, which scores it beside the
in-place backends. GPTQ also runs on the CPU (slowly; that is how the tests run it, with
``scripts/setup_gptq.sh``); AWQ needs CUDA. Bad input (too little calibration text, unknown
method, no GPTQ environment) fails before any model is loaded; a failed run leaves no
half-written model (see ``rightsizer.quantize_gptq``).

Register it (project_setup.py)::

    fn = project.set_function("functions/quantize_gptq.py", name="quantize-gptq", kind="job",
                              image=image, handler="quantize_gptq", with_repo=bool(source))
    fn.build_config(commands=gptq_build_commands())
    fn.with_limits(gpus=1, gpu_type=gpu_type)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rightsizer.errors import ConfigError
from rightsizer.quantize_gptq import (METHODS, RESULT_MARK, check_method, missing_packages,
                                     served_calibration_texts)

GPTQ_VENV = "/opt/gptq"
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-gptq.txt"


def gptq_build_commands(venv: str = GPTQ_VENV, requirements: Path = REQUIREMENTS) -> list[str]:
    """Image build commands: a second virtualenv with the GPTQ/AWQ packages."""
    pkgs = [ln.strip() for ln in requirements.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    quoted = " ".join(f"'{p}'" for p in pkgs)
    return [f"python -m venv {venv}", f"{venv}/bin/pip install --no-cache-dir {quoted}"]


def gptq_python(method: str) -> str:
    """The interpreter that has the method's package: $RIGHTSIZER_GPTQ_PYTHON, this one, or the venv."""
    explicit = os.environ.get("RIGHTSIZER_GPTQ_PYTHON")
    if explicit:
        return explicit
    if not missing_packages(method):
        return sys.executable
    venv_python = Path(GPTQ_VENV, "bin", "python")
    if venv_python.exists():
        return str(venv_python)
    raise ConfigError(f"method: {method} needs the {METHODS[method]} package, found neither here nor in "
                      f"{GPTQ_VENV}. Build this function's image with gptq_build_commands() "
                      "(requirements-gptq.txt) or set RIGHTSIZER_GPTQ_PYTHON.")


def quantize_gptq(context, task_spec: str, model_dir: str, method: str = "gptq", bits: int = 4,
                  group_size: int = 128, samples: int = 128, min_samples: int = 16,
                  device: str = "auto", selection: str = "", finetuned: str = "auto") -> None:
    """Pre-quantize ``model_dir`` with calibration text from the task's train split.

    ``selection`` (with ``finetuned`` "auto"): when its chosen rung is LoRA, quantize the
    production adapter's merged model (finetune step) instead, as the quantize step does.

    Logs: the quantized model (``<task>-<method>``, with ``quant_config`` and
    ``rightsizer_quant.json`` in the folder), results ``precision``, ``backend``,
    ``calibration_samples``, ``seconds`` and ``model_dir`` (how later steps reach the model).
    """
    import time

    from functions.mlrun_io import if_file, localize_dir, log_model_dir, made_dir, project_file, reusable, run_layout
    from rightsizer.atomic import atomic_write_text
    from rightsizer.evaluate import load_rows
    from rightsizer.taskspec import load_task

    problems = check_method(method, bits, group_size)
    if problems:
        raise ConfigError(problems)
    spec = load_task(project_file(task_spec))
    python = gptq_python(method)
    layout = run_layout(context)
    reuse = reusable(context, "quantize_gptq",
                     {"task": spec, "model_dir": model_dir, "method": method, "bits": bits,
                      "group_size": group_size, "samples": samples, "min_samples": min_samples,
                      "device": device, "selection": selection, "finetuned": finetuned,
                      "production": if_file(layout.production_file(spec.name))},
                     [layout.prequant_dir(spec.name, method)])
    if reuse.hit():
        return
    rung = None
    if selection:
        from rightsizer.finetune.task import production_for
        from rightsizer.select import Selection

        sel = Selection.load(selection)
        prod = production_for(spec, sel.chosen.candidate, sel.chosen.rung, selection,
                              layout.production_file(spec.name), finetuned)
        model_dir = prod["merged_dir"] if prod else model_dir
        rung = sel.chosen.rung
    texts = served_calibration_texts(spec, load_rows(spec, "train"), rung, samples=samples,
                                     min_samples=min_samples)
    src = localize_dir(model_dir)
    work = made_dir(layout.prequant_dir(spec.name, method))
    out = layout.prequant_model_dir(spec.name, method)
    if out.exists():
        shutil.rmtree(out)
    texts_path = layout.calibration_texts_file(spec.name, method)
    atomic_write_text(texts_path, json.dumps(texts))
    repo = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [python, "-m", "rightsizer.quantize_gptq", "--model-path", src, "--texts", str(texts_path),
           "--output-dir", str(out), "--method", method, "--bits", str(bits), "--group-size", str(group_size),
           "--device", device]
    context.logger.info(f"{method} quantization of {src} with {len(texts)} calibration texts ({python})")
    start = time.perf_counter()
    # in the step's folder: gptqmodel writes a logs/ folder into its working directory
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(work))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-3000:]
        if "ConfigError" in tail:
            raise ConfigError(tail.strip().splitlines()[-1])
        raise RuntimeError(f"{method} quantization failed (exit {proc.returncode}):\n{tail}")
    marked = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if not marked:
        raise RuntimeError(f"{method} quantization printed no result line:\n{proc.stdout[-2000:]}")
    config = json.loads(marked[-1][len(RESULT_MARK):])
    ref = log_model_dir(context, f"{spec.name}-{method}", out, framework="transformers",
                        labels={"task": spec.name, "precision": config["precision"], "backend": method},
                        parameters={"quant_config": config})
    context.log_results({"precision": config["precision"], "backend": method,
                         "calibration_samples": len(texts), "seconds": round(time.perf_counter() - start, 1),
                         "model_dir": ref})
    reuse.done()
