"""MLRun serving classes: one ``TaskModelServer`` per task behind a router.

The router sends ``/v2/models/<task>/infer`` to the model server of that task. Each server
loads its task's serving bundle (the registered model: weights, tokenizer and
``rightsizer.json``) and answers with the label, class probabilities and a generation.
"""

from __future__ import annotations

import mlrun
from mlrun.serving.v2_serving import V2ModelServer

from functions.mlrun_io import localize_dir
from rightsizer.errors import ConfigError
from rightsizer.serving import TaskModel


class TaskModelServer(V2ModelServer):
    """Serves one task's bundle; thread-safe (the mock server calls predict concurrently)."""

    def load(self):
        self.task_model = TaskModel(localize_dir(self.model_path))

    def validate(self, request, operation):
        request = super().validate(request, operation)
        if operation == "infer":
            try:
                request["inputs"] = self.task_model.validate(request.get("inputs"))
            except ConfigError as e:  # a bad request is the caller's error: 400, not 500
                raise mlrun.errors.MLRunBadRequestError(str(e)) from None
        return request

    def predict(self, request: dict) -> list:
        return self.task_model.predict(request["inputs"])
