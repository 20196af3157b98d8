"""Task and application specs: YAML files that say what "good enough" means per task.

The format is ``rightsizer.schema.task`` (types) and ``rightsizer.schema.app``; this package
reads a file (``load``), checks its values (``checks``) and where its data may live
(``paths``), and loads an application (``app``). A spec is validated as a whole when it is
loaded: every problem is collected and raised in one ``ConfigError``. ``TaskSpec.to_dict``
and ``task_from_dict`` are exact mirrors (the serving bundle relies on it; tested by round
trip).
"""

from rightsizer.schema.task import (CHUNK_RULES, CONTEXT, DECISION_RULES, DEFAULT_RUNGS, MAX_SEQ_LEN, RETRIEVERS,
                                    RUNGS, SLO, TASK_NAME, TRUNCATE_RULES, ChunkRule, ExtractionFields, FieldRule,
                                    FinetuneSettings, Ladder, LoraSettings, PlannedModel, Retrieval, Screening,
                                    TaskSpec, Workload, template_fields)
from rightsizer.taskspec.app import APP_FIELDS, AppSpec, app_schema, app_task_paths, load_app
from rightsizer.taskspec.checks import check_lora
from rightsizer.taskspec.load import MAX_SPEC_BYTES, load_task, read_spec_yaml, task_from_dict, task_schema
from rightsizer.taskspec.paths import DATA_ROOTS_ENV, allowed_roots, data_roots, project_root, within_roots

__all__ = [
    "APP_FIELDS", "CHUNK_RULES", "CONTEXT", "DATA_ROOTS_ENV", "DECISION_RULES", "DEFAULT_RUNGS", "MAX_SEQ_LEN",
    "MAX_SPEC_BYTES", "RETRIEVERS", "RUNGS", "SLO", "TASK_NAME", "TRUNCATE_RULES", "AppSpec", "ChunkRule",
    "ExtractionFields", "FieldRule", "FinetuneSettings", "Ladder", "LoraSettings", "PlannedModel", "Retrieval",
    "Screening", "TaskSpec", "Workload", "allowed_roots", "app_schema", "app_task_paths", "check_lora",
    "data_roots", "load_app", "load_task", "project_root", "read_spec_yaml", "task_from_dict", "task_schema",
    "template_fields", "within_roots",
]
