"""A corpus of bad inputs, one row per case, across every surface that reads user input.

Each case builds one bad input in a fresh folder (most are a real file of ``tasks/`` with
one thing changed), hands it to the loader that owns it, and the test asserts:

- the error type (``ConfigError`` for files and settings, ``ServingError`` 400 with its
  ``param`` for requests, exit code 2 and no traceback for the CLI);
- that the message names the file and the field (``contains``);
- that nothing was left behind: no new or changed entry anywhere under the test's folder
  (the inputs, the working directory, ``$RIGHTSIZER_CACHE``, the ``tempfile`` folder and, for
  data cases, the ``datasets`` cache), hidden ``.tmp*`` folders included.

To add a case, append a ``Case`` to the table of its surface. ``{input}`` in ``contains`` is
replaced by ``str()`` of what ``build`` returned (a path, usually). A case that cannot be
fixed yet goes in as ``pytest.param(Case(...), marks=pytest.mark.xfail(strict=True, ...))``.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rightsizer.cli import EXIT_CONFIG, main
from rightsizer.errors import ConfigError
from rightsizer.serving.errors import ServingError

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks"
CONFIGS = ROOT / "tests" / "fixtures" / "configs"
LLAMA8 = str(CONFIGS / "llama-3.1-8b.json")
ROUTING = yaml.safe_load((TASKS / "ticket_routing.yaml").read_text())
SERVED = ["ticket_routing", "review_sentiment"]


@dataclass(frozen=True)
class Case:
    id: str
    surface: str
    build: Callable[[Path], Any]  # writes the bad input under the folder; returns what ``call`` takes
    call: Callable[[Any], Any]  # loads or uses it (CLI: returns the exit code)
    error: type[BaseException] | int  # the exception it must raise (CLI: the exit code)
    contains: tuple[str, ...]  # substrings of the message: the file and the field
    param: str | None = None  # ServingError: the request field it names
    data: bool = False  # touches the datasets cache


# --------------------------------------------------------------------------- builders


def _set(d: dict, dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for key in head:
        d = d.setdefault(key, {})
    if value is _DROP:
        d.pop(last)
    else:
        d[last] = value


_DROP = object()


def _project(folder: Path) -> Path:
    """A project folder (``project.yaml``) with a ``tasks/`` folder; returns the latter."""
    (folder / "project.yaml").write_text("kind: project\n")
    tasks = folder / "tasks"
    tasks.mkdir(exist_ok=True)
    return tasks


def spec_with(**changes: Any) -> Callable[[Path], Path]:
    """The routing spec with dotted fields changed (``_DROP`` removes one), as ``bad.yaml``."""
    def build(folder: Path) -> Path:
        data = copy.deepcopy(ROUTING)
        for dotted, value in changes.items():
            _set(data, dotted.replace("__", "."), value)
        path = _project(folder) / "bad.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path
    return build


def spec_text(content: str | bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = _project(folder) / "bad.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path
    return build


def _load_task(path: Path):
    from rightsizer.taskspec import load_task

    return load_task(path)


def spec_case(id: str, build, *contains: str, surface: str = "task spec") -> Case:
    return Case(id, surface, build, _load_task, ConfigError, ("bad.yaml", *contains))


ROUTING_YAML = yaml.safe_dump(ROUTING, sort_keys=False)

TASK_SPECS = [
    spec_case("threshold-not-a-number", spec_with(threshold="high"), "threshold: expected float"),
    spec_case("unknown-field", spec_with(treshold=0.9), "treshold: unknown field"),
    spec_case("missing-required-field", spec_with(prompt=_DROP), "prompt: missing required field"),
    spec_case("bad-task-type", spec_with(type="regression"), "type: 'regression' is not a task type"),
    spec_case("metric-of-another-type", spec_with(metric="exact_match"), "metric: 'exact_match'"),
    spec_case("bad-decision-rule", spec_with(decision_rule="median"), "decision_rule: 'median'"),
    spec_case("threshold-out-of-range", spec_with(threshold=1.5), "threshold: 1.5 is outside"),
    spec_case("zero-batch", spec_with(workload__batch=0), "workload.batch: 0"),
    spec_case("negative-ttft", spec_with(slo__ttft_ms=-5), "slo.ttft_ms: -5"),
    spec_case("nan-tpot", spec_with(slo__tpot_ms=float("nan")), "slo.tpot_ms: nan"),
    spec_case("slo-not-a-mapping", spec_with(slo="fast"), "slo: expected a mapping"),
    spec_case("unknown-placeholder", spec_with(prompt="Ticket: {txt}\nQueue:"), "unknown placeholder {txt}"),
    spec_case("lone-brace", spec_with(prompt="Ticket: {text\nQueue:"), "prompt:", "not a valid template"),
    spec_case("one-label", spec_with(labels=["billing"]), "labels: a classification task needs"),
    spec_case("labels-not-strings", spec_with(labels=[1, 2]), "labels: expected list[str]"),
    spec_case("no-candidates", spec_with(candidates=[]), "candidates: at least one"),
    spec_case("unknown-rung", spec_with(ladder__rungs=["zero_shot", "distill"]), "ladder.rungs: 'distill'"),
    spec_case("unknown-precision", spec_with(precisions=["fp3"]), "precisions: 'fp3'"),
    spec_case("missing-eval-split", spec_with(dataset={"train": "data/ticket_routing/train.jsonl"}),
              "dataset: no 'eval' split"),
    spec_case("bool-as-string", spec_with(trust_remote_code="yes"), "trust_remote_code: expected bool"),
    spec_case("screening-growth-nan", spec_with(screening={"growth": float("nan")}), "screening.growth: nan"),
    spec_case("retrieval-source-missing", spec_with(retrieval={"source": "knowledge/"}),
              "retrieval.source: 'knowledge/' not found"),
    spec_case("retrieval-bad-chunk-rule", spec_with(retrieval={"source": "bad.yaml", "chunk": {"by": "sentence"}}),
              "retrieval.chunk.by: 'sentence'"),
    spec_case("retrieval-k-zero", spec_with(retrieval={"source": "bad.yaml", "k": 0}), "retrieval.k: 0"),
    spec_case("plan-bad-precision", spec_with(plan={"model": "configs/x.json", "precision": "int3"}),
              "plan.precision"),
    spec_case("plan-unknown-field", spec_with(plan={"model": "configs/x.json", "size": "8b"}),
              "plan.size: unknown field"),
    spec_case("name-escapes-the-layout", spec_with(name="../ticket_routing"), "name: '../ticket_routing'"),
    spec_case("loader-field", spec_with(base_dir="/etc"), "base_dir: unknown field"),
    spec_case("yaml-alias", spec_text("a: &x [1, 2]\nb: *x\n"), "YAML aliases (*x)"),
    spec_case("invalid-yaml", spec_text("name: [unclosed\n"), "not valid YAML"),
    spec_case("non-utf8", spec_text(ROUTING_YAML.encode() + b"# \xff\xfe\n"), "not UTF-8"),
    spec_case("top-level-list", spec_text("- name: x\n- type: classification\n"), "the top level is a list"),
    spec_case("oversized-file", spec_text("# " + "x" * (1 << 20) + "\n" + ROUTING_YAML), "bytes; a task spec is at most"),
]

# Fine-tuning settings: the spec's ``finetune`` and ``ladder.lora`` sections, and the
# trainer's own settings (``FinetuneConfig``, what the MLRun handler passes on).


def _validate_finetune(cfg):
    from rightsizer.finetune.train import FinetuneConfig, validate

    return validate(FinetuneConfig.from_dict(cfg), check_model=False)


def finetune_cfg(**changes: Any) -> Callable[[Path], dict]:
    def build(folder: Path) -> dict:
        model = folder / "model"
        model.mkdir()
        (model / "config.json").write_text((CONFIGS / "gpt2.json").read_text())
        cfg = {"model": str(model), "train_data": [{"text": "t", "label": "billing"}] * 4,
               "output_dir": str(folder / "out"), "steps": 2}
        cfg.update(changes)
        return cfg
    return build


def train_file(content: bytes) -> Callable[[Path], dict]:
    def build(folder: Path) -> dict:
        path = folder / "train.jsonl"
        path.write_bytes(content)
        return {**finetune_cfg()(folder), "train_data": str(path)}
    return build


def ft_case(id: str, build, *contains: str) -> Case:
    return Case(id, "finetune settings", build, _validate_finetune, ConfigError, ("fine-tune", *contains))


FINETUNE = [
    spec_case("finetune-steps-and-epochs", spec_with(finetune={"steps": 10, "epochs": 2}),
              "finetune.steps and finetune.epochs", surface="finetune settings"),
    spec_case("finetune-rank-zero", spec_with(finetune__rank=0), "finetune.rank: 0", surface="finetune settings"),
    spec_case("finetune-not-a-mapping", spec_with(finetune="big"), "finetune: expected a mapping",
              surface="finetune settings"),
    spec_case("finetune-epochs-nan", spec_with(finetune__epochs=float("nan")), "finetune.epochs: nan",
              surface="finetune settings"),
    spec_case("lora-negative-learning-rate", spec_with(ladder__lora__learning_rate=-1),
              "ladder.lora.learning_rate: -1", surface="finetune settings"),
    spec_case("lora-not-a-mapping", spec_with(ladder__lora=8), "ladder.lora: expected a mapping",
              surface="finetune settings"),
    spec_case("lora-unknown-field", spec_with(ladder__lora__lr=0.1), "ladder.lora.lr: unknown field",
              surface="finetune settings"),
    Case("trainer-unknown-parameter", "finetune settings", finetune_cfg(lora_rank=8), _validate_finetune,
         ConfigError, ("unknown fine-tune parameter", "lora_rank")),
    ft_case("trainer-dropout-not-a-number", finetune_cfg(dropout="high"), "dropout: 'high'"),
    ft_case("trainer-zero-stage", finetune_cfg(zero_stage=4), "zero_stage: 4"),
    ft_case("trainer-bad-jsonl", train_file(b'{"text": "a", "label": "b"}\n{oops\n'), "train.jsonl:2", "not JSON"),
    ft_case("trainer-non-utf8", train_file(b'{"text": "\xff", "label": "b"}\n'), "train.jsonl", "not UTF-8"),
]

# --------------------------------------------------------------------------- app specs


def app_with(app: Any, tasks: dict[str, dict] | None = None) -> Callable[[Path], Path]:
    """An app spec (a mapping, or raw text) beside task spec files (name -> spec dict)."""
    def build(folder: Path) -> Path:
        tasks_dir = _project(folder)
        for name, data in (tasks if tasks is not None else {"routing.yaml": ROUTING}).items():
            (tasks_dir / name).write_text(yaml.safe_dump(data, sort_keys=False))
        path = tasks_dir / "app.yaml"
        path.write_text(app if isinstance(app, str) else yaml.safe_dump(app, sort_keys=False))
        return path
    return build


def _load_app(path: Path):
    from rightsizer.taskspec import load_app

    return load_app(path)


def _plan_app(path: Path):
    from rightsizer.plan.app import decisions_from_app

    return decisions_from_app(path)


def app_case(id: str, build, *contains: str, call=_load_app) -> Case:
    return Case(id, "app spec", build, call, ConfigError, ("app.yaml", *contains))


APP_SPECS = [
    app_case("no-tasks", app_with({"name": "shop"}), "tasks: expected a non-empty list"),
    app_case("name-not-a-string", app_with({"name": 5, "tasks": ["routing.yaml"]}), "name: missing or not a string"),
    app_case("task-file-missing", app_with({"name": "shop", "tasks": ["nope.yaml"]}), "nope.yaml", "not found"),
    app_case("task-ref-not-a-path", app_with({"name": "shop", "tasks": [5]}), "tasks[0]: 5"),
    app_case("bad-task-inside", app_with({"name": "shop", "tasks": ["routing.yaml"]},
                                         {"routing.yaml": {**ROUTING, "threshold": "x"}}),
             "routing.yaml", "threshold: expected float"),
    app_case("duplicate-task-names", app_with({"name": "shop", "tasks": ["routing.yaml", "./routing.yaml"]}),
             "tasks: duplicate task names"),
    app_case("unknown-field", app_with({"name": "shop", "tasks": ["routing.yaml"], "baselin": {"model": "x"}}),
             "baselin: unknown field"),
    app_case("top-level-list", app_with("- routing.yaml\n"), "the top level is a list"),
    app_case("plan-baseline-not-a-mapping", app_with({"name": "shop", "tasks": ["routing.yaml"], "baseline": "big"}),
             "baseline: expected a mapping", call=_plan_app),
]

# --------------------------------------------------------------------------- data files

GOOD_ROW = json.dumps({"text": "my card was charged twice", "label": "billing"})


def data_file(content: bytes | str | None, ref: str = "data/eval.jsonl") -> Callable[[Path], Path]:
    """The routing spec whose eval split is ``ref`` (written with ``content`` unless None)."""
    def build(folder: Path) -> Path:
        spec = spec_with(dataset={"train": "data/train.jsonl", "eval": ref})(folder)
        data = spec.parent / "data"
        data.mkdir()
        (data / "train.jsonl").write_text(GOOD_ROW + "\n")
        if content is not None:
            target = spec.parent / ref
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return spec
    return build


def _load_eval(path: Path):
    from rightsizer.evaluate import load_rows

    return load_rows(_load_task(path), "eval")


def data_case(id: str, build, *contains: str) -> Case:
    return Case(id, "data file", build, _load_eval, ConfigError, ("dataset.eval", *contains), data=True)


DATA_FILES = [
    data_case("split-file-missing", data_file(None), "file not found", "eval.jsonl"),
    data_case("path-outside-project", data_file(None, "../../elsewhere/eval.jsonl"), "outside the project"),
    data_case("bad-jsonl-line", data_file(GOOD_ROW + "\n{not json\n"), "eval.jsonl line 2", "not valid JSON"),
    data_case("row-not-an-object", data_file(GOOD_ROW + "\n[1, 2]\n"), "eval.jsonl line 2", "JSON object"),
    data_case("label-not-a-string", data_file(json.dumps({"text": "a", "label": 3}) + "\n"), "label(s) [3]"),
    data_case("label-types-mixed", data_file(GOOD_ROW + "\n" + json.dumps({"text": "a", "label": 3}) + "\n"),
              "eval.jsonl"),
    data_case("missing-input-field", data_file(json.dumps({"body": "a", "label": "billing"}) + "\n"),
              "no field(s) ['text']"),
    data_case("oversized-row", data_file(json.dumps({"text": "x" * (1 << 20), "label": "billing"}) + "\n"),
              "eval.jsonl line 1 is over"),
    data_case("empty-file", data_file("\n\n"), "eval.jsonl is empty"),
    data_case("non-utf8", data_file(b'{"text": "caf\xe9", "label": "billing"}\n'), "eval.jsonl line 1",
              "not UTF-8"),
    data_case("csv-missing-column", data_file("body,label\nhello,billing\n", "data/eval.csv"),
              "no field(s) ['text']"),
]

# --------------------------------------------------------------------------- CLI


def cli(*argv: str, files: dict[str, str] | None = None) -> Callable[[Path], list[str]]:
    """argv for ``rightsizer.cli.main``; ``{dir}`` in it is the case's folder, where ``files`` are written."""
    def build(folder: Path) -> list[str]:
        for name, text in (files or {}).items():
            (folder / name).write_bytes(text.encode("latin-1"))
        return [a.replace("{dir}", str(folder)) for a in argv]
    return build


def _run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse refuses the command line itself
        return e.code


def cli_case(id: str, build, *contains: str) -> Case:
    return Case(id, "cli", build, _run_cli, EXIT_CONFIG, contains)


SIZE = ("size", "--config", LLAMA8, "--prompt-tokens", "128", "--output-tokens", "16")
REC = ("recommend", "--config", LLAMA8, "--prompt-tokens", "128", "--output-tokens", "16", "--ttft-ms", "500",
       "--tpot-ms", "50")

CLI = [
    cli_case("unknown-gpu", cli(*SIZE, "--gpu", "X100"), "unknown GPU 'X100'"),
    cli_case("negative-tokens", cli("size", "--config", LLAMA8, "--gpu", "L4", "--prompt-tokens", "-5",
                                    "--output-tokens", "16"), "prompt_tokens"),
    cli_case("tokens-not-a-number", cli(*SIZE[:4], "lots", "--output-tokens", "1", "--gpu", "L4"),
             "--prompt-tokens", "'lots'"),
    cli_case("bad-precision", cli(*SIZE, "--gpu", "L4", "--precision", "q3"), "q3"),
    cli_case("missing-config", cli("size", "--config", "{dir}/nope.json", "--gpu", "L4", "--prompt-tokens", "1",
                                   "--output-tokens", "1"), "nope.json"),
    cli_case("bad-price", cli("gpus", "--price", "H100-SXM=cheap"), "--price expects GPU=USD", "cheap"),
    cli_case("negative-price", cli("gpus", "--price", "H100-SXM=-3"), "H100-SXM", "price_per_hour"),
    cli_case("unknown-price-list", cli("gpus", "--price-list", "moon-base"), "unknown price list 'moon-base'"),
    cli_case("catalog-not-yaml", cli("gpus", "--catalog", "{dir}/gpus.yaml", files={"gpus.yaml": "gpus: [\n"}),
             "gpus.yaml", "not valid YAML"),
    cli_case("calibration-missing", cli(*SIZE, "--gpu", "L4", "--calibration", "{dir}/cal.json"), "cal.json"),
    cli_case("recommend-unknown-precision", cli(*REC, "--precisions", "bf16,q3"), "q3"),
    cli_case("recommend-unknown-gpu", cli(*REC, "--gpus", "L4,X100"), "X100"),
    cli_case("plan-decisions-missing", cli("plan", "--decisions", "{dir}/none.json"), "none.json"),
    cli_case("plan-bad-headroom", cli("plan", "--app", str(TASKS / "examples" / "support_hub.yaml"),
                                      "--headroom", "1.5"), "headroom", "1.5"),
    cli_case("plan-app-missing", cli("plan", "--app", "{dir}/app.yaml"), "app.yaml", "not found"),
]

# --------------------------------------------------------------------------- serving requests


def _parse(args):
    from rightsizer.serving.api import parse_request

    kind, body, path_task = args
    return parse_request(kind, body, SERVED, path_task=path_task)


def req(id: str, kind: str, body: Any, param: str | None, *contains: str, path_task: str | None = None) -> Case:
    return Case(id, "serving request", lambda folder: (kind, body, path_task), _parse, ServingError,
                contains, param=param)


SERVING = [
    req("body-not-an-object", "completions", ["x"], "body", "body: expected a JSON object"),
    req("v2-unknown-task", "v2", {"inputs": ["x"]}, "model", "'nope' is not a served task", path_task="nope"),
    req("v2-parameters-not-an-object", "v2", {"inputs": ["x"], "parameters": [1]}, "parameters",
        "parameters: expected an object", path_task="ticket_routing"),
    req("v2-empty-inputs", "v2", {"inputs": []}, "inputs", "inputs: expected a non-empty list",
        path_task="ticket_routing"),
    req("v2-input-not-a-string", "v2", {"inputs": ["ok", 5]}, "inputs[1]", "inputs[1]", path_task="ticket_routing"),
    req("no-model", "completions", {"prompt": "x"}, "model", "model: expected a task name"),
    req("unknown-model", "completions", {"model": "gpt-4", "prompt": "x"}, "model", "'gpt-4' is not a served task"),
    req("max-tokens-zero", "completions", {"model": "ticket_routing", "prompt": "x", "max_tokens": 0},
        "max_tokens", "max_tokens: 0"),
    req("max-tokens-bool", "chat", {"model": "ticket_routing", "messages": [{"role": "user", "content": "x"}],
                                    "max_completion_tokens": True}, "max_completion_tokens", "True"),
    req("stream-not-bool", "completions", {"model": "ticket_routing", "prompt": "x", "stream": "yes"},
        "stream", "stream: 'yes'"),
    req("n-two", "completions", {"model": "ticket_routing", "prompt": "x", "n": 2}, "n", "n: 2"),
    req("stream-many-prompts", "completions", {"model": "ticket_routing", "prompt": ["a", "b"], "stream": True},
        "prompt", "2 prompts with stream=true"),
    req("chat-no-user", "chat", {"model": "ticket_routing", "messages": [{"role": "system", "content": "x"}]},
        "messages", "no message with role 'user'"),
    req("chat-system-turn", "chat", {"model": "ticket_routing", "messages": [
        {"role": "system", "content": "x"}, {"role": "user", "content": "y"}]},
        "messages[0]", "messages[0] (role 'system')"),
    req("chat-lone-surrogate", "chat", {"model": "ticket_routing",
                                        "messages": [{"role": "user", "content": "a\ud800b"}]},
        "messages[0].content[0]", "unpaired surrogate"),
]

# --------------------------------------------------------------------------- bundles


def bundle(change: Callable[[dict], Any] | None = None, raw: bytes | None = None,
           drop_meta: bool = False) -> Callable[[Path], Path]:
    """A serving bundle (its ``rightsizer.json``; no weights) with its metadata changed."""
    def build(folder: Path) -> Path:
        from rightsizer.bundle import BUNDLE_FILE, write_bundle

        empty = folder / "model"
        empty.mkdir()
        out = write_bundle(empty, _load_task(TASKS / "ticket_routing.yaml"), folder / "bundle",
                           base_model="demo:tiny-s", rung="zero_shot")
        meta_file = out / BUNDLE_FILE
        if drop_meta:
            meta_file.unlink()
        elif raw is not None:
            meta_file.write_bytes(raw)
        elif change is not None:
            meta = json.loads(meta_file.read_text())
            meta = change(meta) or meta
            meta_file.write_text(json.dumps(meta))
        return out
    return build


def _load_bundle(path: Path):
    from rightsizer.inference import load_bundle

    return load_bundle(path, device="cpu")


def _legacy(meta: dict) -> dict:
    meta.pop("spec")
    meta.pop("task")
    return meta


def bundle_case(id: str, build, *contains: str) -> Case:
    return Case(id, "bundle", build, _load_bundle, ConfigError, contains)


BUNDLES = [
    bundle_case("no-bundle-file", bundle(drop_meta=True), "bundle", "no rightsizer.json"),
    bundle_case("truncated-json", bundle(raw=b'{"task": "ticket_rou'), "rightsizer.json", "JSONDecodeError"),
    bundle_case("non-utf8", bundle(raw=b'{"task": "\xff"}'), "rightsizer.json", "UnicodeDecodeError"),
    bundle_case("top-level-list", bundle(raw=b"[1, 2]"), "rightsizer.json", "expected a JSON object"),
    bundle_case("spec-bad-type", bundle(lambda m: m["spec"].update(type="regression")), "rightsizer.json",
                "type: 'regression'"),
    bundle_case("legacy-missing-task", bundle(_legacy), "rightsizer.json", "task"),
    bundle_case("quant-config-not-a-mapping", bundle(lambda m: m.update(quant_config="int4")), "rightsizer.json",
                "quant_config"),
    bundle_case("retrieval-dir-missing", bundle(lambda m: m.update(retrieval={"dir": "retrieval"})),
                "retrieval", "missing"),
    bundle_case("no-weights", bundle(), "bundle", "no config.json"),
]

# --------------------------------------------------------------------------- price lists and the GPU catalog

PRICE_LIST = {"name": "mine", "date": "2026-01-01", "source": "user", "mig_rule": "compute_share",
              "prices": {"H100-SXM": {"price_per_hour": 6.5}}}
GPUS = yaml.safe_load((ROOT / "rightsizer" / "data" / "gpus.yaml").read_text())


def yaml_file(name: str, data: Any = None, raw: bytes | None = None, **changes: Any) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        if raw is not None:
            path.write_bytes(raw)
            return path
        d = copy.deepcopy(data)
        for dotted, value in changes.items():
            _set(d, dotted.replace("__", "."), value)
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path
    return build


def _load_prices(path: Path):
    from rightsizer.sizing.prices import load_price_list

    return load_price_list(path)


def _load_catalog(path: Path | None, price_list: Any = None):
    from rightsizer.sizing.catalog import load_catalog

    return load_catalog(path, price_list=price_list)


def _first_gpu(**changes: Any) -> dict:
    d = copy.deepcopy(GPUS)
    d["gpus"][0].update(changes)
    return d


def price_case(id: str, build, *contains: str) -> Case:
    return Case(id, "price list", build, _load_prices, ConfigError, ("prices.yaml", *contains))


def catalog_case(id: str, build, *contains: str) -> Case:
    return Case(id, "gpu catalog", build, _load_catalog, ConfigError, ("gpus.yaml", *contains))


PRICES = [
    price_case("negative-price", yaml_file("prices.yaml", PRICE_LIST, prices={"H100-SXM": {"price_per_hour": -1}}),
               "prices.H100-SXM.price_per_hour"),
    price_case("bad-date", yaml_file("prices.yaml", PRICE_LIST, date="last tuesday"), "'date' must be YYYY-MM-DD"),
    price_case("bad-mig-rule", yaml_file("prices.yaml", PRICE_LIST, mig_rule="half"), "'mig_rule'", "'half'"),
    price_case("unknown-field", yaml_file("prices.yaml", PRICE_LIST, currency_code="EUR"),
               "unknown field 'currency_code'"),
    price_case("non-utf8", yaml_file("prices.yaml", raw=b"name: caf\xe9\n"), "not UTF-8 text", "byte 9"),
    price_case("yaml-alias", yaml_file("prices.yaml", raw=b"name: &n mine\nsource: *n\n"), "YAML aliases (*n)",
               "price list"),
    price_case("oversized", yaml_file("prices.yaml", raw=b"# " + b"x" * (1 << 20) + b"\nname: mine\n"),
               "bytes; a price list is at most"),
    price_case("invalid-yaml", yaml_file("prices.yaml", raw=b"prices: {H100-SXM: [\n"), "not valid YAML"),
    price_case("no-prices", yaml_file("prices.yaml", PRICE_LIST, prices={}), "field 'prices' must map"),
    price_case("missing-source", yaml_file("prices.yaml", PRICE_LIST, source=_DROP), "field 'source' is required"),
    Case("device-not-in-catalog", "price list", yaml_file("prices.yaml", PRICE_LIST,
                                                          prices={"H900": {"price_per_hour": 1.0}}),
         lambda p: _load_catalog(None, price_list=p),
         ConfigError, ("prices.yaml", "prices.H900", "not in the catalog")),
    catalog_case("negative-memory", yaml_file("gpus.yaml", _first_gpu(memory_bytes=-1)), "memory_bytes"),
    catalog_case("not-a-mapping", yaml_file("gpus.yaml", raw=b"- T4\n- L4\n"), "a mapping with a 'gpus' list"),
    catalog_case("non-utf8", yaml_file("gpus.yaml", raw=b"gpus: []\n# \xff\n"), "not UTF-8 text"),
    # the alias chain that expands exponentially: refused past a few aliases
    catalog_case("alias-chain", yaml_file("gpus.yaml", raw=b"a: &a [x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode()
        for i in range(8)) + b"gpus: [*i]\n"), "more than 16 YAML aliases", "GPU catalog"),
    catalog_case("oversized", yaml_file("gpus.yaml", raw=b"gpus: []\n# " + b"x" * (1 << 20) + b"\n"),
                 "bytes; a GPU catalog is at most"),
    catalog_case("unknown-gpu-field", yaml_file("gpus.yaml", _first_gpu(memory_gb=16)), "unknown field 'memory_gb'"),
]

CASES = TASK_SPECS + FINETUNE + APP_SPECS + DATA_FILES + CLI + SERVING + BUNDLES + PRICES


def _case_id(case) -> str:
    c = case.values[0] if hasattr(case, "values") else case
    return f"{c.surface.replace(' ', '-')}:{c.id}"


# --------------------------------------------------------------------------- the test


def _tree(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (hidden ones too) with its size (-1: a folder)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(folder, name), root)] = -1
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = os.path.getsize(path)
    return out


def test_the_corpus_covers_every_surface():
    surfaces = {}
    for case in CASES:
        c = case.values[0] if hasattr(case, "values") else case
        surfaces[c.surface] = surfaces.get(c.surface, 0) + 1
    assert len(CASES) >= 60 and len({_case_id(c) for c in CASES}) == len(CASES)
    assert set(surfaces) == {"task spec", "finetune settings", "app spec", "data file", "cli", "serving request",
                             "bundle", "price list", "gpu catalog"}, surfaces


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_is_refused_naming_the_file_and_field_and_leaves_nothing(case, tmp_path, monkeypatch, capsys):
    inputs, cache, systmp, cwd = (tmp_path / n for n in ("inputs", "cache", "tmp", "cwd"))
    for d in (inputs, cache, systmp, cwd):
        d.mkdir()
    monkeypatch.setenv("RIGHTSIZER_CACHE", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    monkeypatch.chdir(cwd)
    hf_cache = tmp_path / "hf_datasets"
    if case.data:
        import datasets

        hf_cache.mkdir()
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    arg = case.build(inputs)
    capsys.readouterr()
    before = _tree(tmp_path)

    if isinstance(case.error, int):  # a CLI case: an exit code and a message on stderr
        code = case.call(arg)
        captured = capsys.readouterr()
        message = captured.err
        assert code == case.error, (code, message, captured.out)
        assert "Traceback" not in message
    else:
        with pytest.raises(case.error) as info:
            case.call(arg)
        message = str(info.value)
        if isinstance(info.value, ServingError):
            assert info.value.status == 400
            assert info.value.param == case.param
    for part in case.contains:
        assert part.replace("{input}", str(arg)) in message, f"{part!r} not in the message:\n{message}"

    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}, "new or changed entries"
    assert set(before) == set(after), f"entries removed: {set(before) - set(after)}"
    assert not any(cache.iterdir()), f"cache entries: {list(cache.iterdir())}"
    assert not any(systmp.iterdir()), f"temporary files: {list(systmp.iterdir())}"
    if case.data:
        assert not any(hf_cache.iterdir()), f"datasets cache entries: {list(hf_cache.iterdir())}"
