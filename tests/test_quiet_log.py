"""A clean run to read: known import-time noise of the libraries is dropped by its text, and
nothing else is."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_torchao_import_noise_is_dropped_on_a_cpu_machine():
    out = subprocess.run([sys.executable, "-c", "import rightsizer, torchao"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    assert "Failed to load" not in log and "Enum subclass" not in log, log
    # without the package's filters the same import prints them (the test would see a change
    # of torchao's wording)
    bare = subprocess.run([sys.executable, "-c", "import torchao"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    import torch

    if not torch.cuda.is_available():
        assert "Failed to load" in bare.stdout + bare.stderr


def test_other_messages_of_those_loggers_still_show(caplog):
    import rightsizer  # noqa: F401 - installs the filters

    with caplog.at_level(logging.WARNING):
        logging.getLogger("torchao").warning("Failed to quantize layer 3: shape mismatch")
        logging.getLogger("torchao").warning("something else went wrong")
        logging.getLogger("torch.utils._pytree").warning("a real pytree problem")
    assert [r.getMessage() for r in caplog.records] == [
        "Failed to quantize layer 3: shape mismatch", "something else went wrong", "a real pytree problem"]


def test_mlruns_spurious_http_trigger_warning_is_dropped_and_a_real_one_kept():
    """MLRun 1.12's with_http warns on every call (it tests a method, not the spec field);
    project_setup drops it only while the field is unset."""
    import mlrun

    import project_setup

    class Seen(logging.Handler):  # what reaches MLRun's logger's handlers (its filters passed)
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(str(record.msg))

    def warned(fn) -> bool:
        seen = Seen()
        logging.getLogger("mlrun").addHandler(seen)
        try:
            project_setup._with_http(fn, workers=1)
        finally:
            logging.getLogger("mlrun").removeHandler(seen)
        return any(m.startswith(project_setup._SpuriousHttpTriggerWarning.MESSAGE) for m in seen.messages)

    fn = mlrun.new_function("quiet-probe", kind="serving", image="mlrun/mlrun")
    assert not warned(fn)
    assert any(k.startswith("spec.triggers.") for k in fn.spec.config)  # the trigger is still added
    fn.spec.disable_default_http_trigger = True  # now the warning is true: it shows
    assert warned(fn)
