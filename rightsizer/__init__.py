"""Rightsizer: the smallest model, lowest precision and cheapest GPU per task.

The package is pure Python (no MLRun import); the MLRun adapters live in ``functions/``.
"""

import logging

__version__ = "0.1.0"


class _KnownNoise(logging.Filter):
    """Drops two import-time messages of torchao (imported lazily by transformers, peft and
    the quantization backends), each matched by its text, so a run's log shows its steps:

    * "Failed to load .../torchao/_C_*.so": kernels built for CUDA (fp8/mx on Hopper and
      Blackwell) that a CPU-only machine cannot load; kept where CUDA is available, where
      a failure to load them matters;
    * torch's deprecation of ``register_constant`` on the Enum classes torchao registers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Failed to load") and "torchao" in message and "_C" in message:
            import torch

            return torch.cuda.is_available()
        return "is an Enum subclass and is now natively supported by torch.compile" not in message


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_KnownNoise())
