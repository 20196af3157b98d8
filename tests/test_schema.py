"""The file formats as types (rightsizer.schema): the typed validator and the JSON Schema
that `python -m rightsizer schema ...` prints, checked against every file the project ships."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml

from rightsizer.cli import SCHEMAS, file_schema
from rightsizer.schema.check import build, json_schema, type_name
from rightsizer.sizing.catalog import DEFAULT_CATALOG_PATH
from rightsizer.sizing.prices import PRICES_DIR

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "rightsizer" / "data" / "schemas"
APP_FILES = [ROOT / "tasks" / "demo_app.yaml", ROOT / "tasks" / "examples" / "support_hub.yaml"]
TASK_FILES = sorted(p for p in [*ROOT.glob("tasks/*.yaml"), *ROOT.glob("tasks/examples/*.yaml")]
                    if p not in APP_FILES)


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = file_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(kind: str, data) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _validator(kind).iter_errors(data)]


def test_every_shipped_task_spec_validates_against_the_printed_schema():
    assert len(TASK_FILES) == 9
    for path in TASK_FILES:
        assert _errors("task", yaml.safe_load(path.read_text())) == [], path


def test_app_specs_catalog_and_price_lists_validate_against_theirs():
    for path in APP_FILES:
        assert _errors("app", yaml.safe_load(path.read_text())) == [], path
    assert _errors("catalog", yaml.safe_load(Path(DEFAULT_CATALOG_PATH).read_text())) == []
    lists = sorted(Path(PRICES_DIR).glob("*.yaml"))
    assert len(lists) >= 2
    for path in lists:
        assert _errors("prices", yaml.safe_load(path.read_text())) == [], path


def test_the_schema_refuses_what_the_loader_refuses():
    raw = yaml.safe_load((ROOT / "tasks" / "review_sentiment.yaml").read_text())
    assert any(e.startswith("threshold:") for e in _errors("task", {**raw, "threshold": "high"}))
    assert any("bogus" in e for e in _errors("task", {**raw, "bogus": 1}))
    assert any("decision_rule" in e for e in _errors("task", {**raw, "decision_rule": "mean"}))
    assert any("type" in e for e in _errors("task", {**raw, "type": "ranking"}))
    assert any(e.startswith("ladder.lora") for e in _errors("task", {**raw, "ladder": {"lora": {"rank": "8"}}}))
    assert any("index" in e for e in _errors("task", {**raw, "index": {}}))  # runtime fields are not the file's
    no_slo = {k: v for k, v in raw.items() if k != "slo"}
    assert any("slo" in e for e in _errors("task", no_slo))
    prices = yaml.safe_load((Path(PRICES_DIR) / "aws-on-demand-us-east-1.yaml").read_text())
    assert _errors("prices", {**prices, "mig_rule": "by_memory"})


@pytest.mark.parametrize("kind", SCHEMAS)
def test_the_shipped_schema_files_are_what_the_cli_prints(kind):
    """Editors read rightsizer/data/schemas/<kind>.schema.json (the yaml-language-server line
    of each shipped file); it must not drift from the types."""
    printed = subprocess.run([sys.executable, "-m", "rightsizer", "schema", kind], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())


def test_shipped_files_name_their_schema_for_editors():
    for path in TASK_FILES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema=") and first.endswith("task.schema.json")
        assert (path.parent / first.split("=", 1)[1]).resolve() == SCHEMA_DIR / "task.schema.json"


@dataclass
class _Inner:
    n: int
    ratio: float = 0.5


@dataclass
class _Outer:
    name: str
    inner: _Inner
    tags: list[str] = field(default_factory=list)
    limit: int | None = None
    inners: dict[str, _Inner] = field(default_factory=dict)


def test_the_validator_reports_every_problem_by_field_and_builds_nested_sections():
    problems: list[str] = []
    assert build(_Outer, {"name": 1, "inner": {"n": True, "x": 0}, "tags": ["a", 2], "limit": 2.5,
                          "inners": {"a": {"n": 1}, "b": "no"}}, "", problems) is None
    assert sorted(problems) == sorted([
        "name: expected str, got int 1",
        "inner.n: expected int, got bool True",
        "inner.x: unknown field; expected one of ['n', 'ratio']",
        "tags: expected list[str], got list ['a', 2]",
        "limit: expected int | None, got float 2.5",
        "inners.b: expected a mapping (n, ratio), got str 'no'",
    ])
    problems = []
    out = build(_Outer, {"name": "x", "inner": {"n": 3, "ratio": 1}, "inners": {"a": {"n": 1}}}, "", problems)
    assert problems == [] and out == _Outer("x", _Inner(3, 1.0), [], None, {"a": _Inner(1)})
    assert isinstance(out.inner.ratio, float)  # an int is widened where a float is expected
    problems = []
    assert build(_Outer, {"inner": {}}, "top", problems) is None
    assert sorted(problems) == ["top.inner.n: missing required field", "top.name: missing required field"]


def test_type_names_and_schema_of_the_validator_agree():
    assert type_name(int | None) == "int | None" and type_name(dict[str, list[str]]) == "dict[str, list[str]]"
    schema = json_schema(_Outer)
    assert schema["required"] == ["name", "inner"] and schema["additionalProperties"] is False
    assert schema["properties"]["inner"] == {"$ref": "#/$defs/_Inner"}
    assert schema["properties"]["limit"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    v = jsonschema.Draft202012Validator(schema)
    assert v.is_valid({"name": "x", "inner": {"n": 1}}) and not v.is_valid({"name": "x", "inner": {"n": "1"}})
