"""The offline demo: load the MLRun project and run ``size_and_deploy`` end to end.

Usage (after scripts/setup.sh): .venv/bin/python scripts/run_demo.py [--app tasks/demo_app.yaml]
It builds the tiny demo candidates (once, cached), runs the workflow with MLRun's local
engine, queries the deployed serving graph (mock server) for each task, and prints the
decision summary: the chosen deployment beside the one-big-model baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


SERVE_HINT = """
serve these models over HTTP (V2 and OpenAI-compatible routes; Ctrl-C stops):
  bash scripts/serve.sh --port 8080 --artifacts {artifacts}
then, in another terminal:
  curl -s localhost:8080/v1/models
  curl -s localhost:8080/v2/models/{task}/infer -d '{{"inputs": ["I was charged twice"]}}'
  .venv/bin/python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8080/v1', \\
api_key='none'); print(c.completions.create(model='{task}', prompt='I was charged twice').choices[0].text)"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default="tasks/demo_app.yaml", help="application spec (YAML)")
    ap.add_argument("--artifacts", default=str(ROOT / "artifacts"), help="artifact path")
    ap.add_argument("--no-reuse", action="store_true",
                    help="run every step again, even those that finished with the same inputs")
    ap.add_argument("--deploy-partial", action="store_true",
                    help="deploy the tasks that were sized when another task cannot be (default: fail before deploying)")
    args = ap.parse_args()
    os.environ.setdefault("MLRUN_ARTIFACT_PATH", args.artifacts)

    import mlrun

    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.layout import RunLayout
    from rightsizer.report import FLEET_COLUMNS, fleet_rows, format_table, summary_rows, unsized_lines

    start = time.perf_counter()
    print("[1/3] demo candidates:", bootstrap())
    project = mlrun.load_project(str(ROOT), name="rightsizer",
                                 parameters={"app": args.app, "reuse_steps": not args.no_reuse},
                                 save=False)  # keep the committed project.yaml as it is
    print("[2/3] running workflow size_and_deploy (engine: local)")
    started = time.time()
    status = project.run("size_and_deploy", artifact_path=args.artifacts, watch=True, dirty=True,
                         arguments={"app": args.app, "deploy_partial": "true" if args.deploy_partial else "auto"})
    done = str(status.state).lower() in ("completed", "succeeded")
    report = RunLayout(Path(args.artifacts)).decisions_file()
    if not done and not (report.is_file() and report.stat().st_mtime >= started):
        print(f"workflow ended in state {status.state}: {status.exc or 'see the log above'}", file=sys.stderr)
        return 1
    decisions = json.loads(report.read_text())
    records, unsized = decisions["records"], decisions.get("unsized") or []
    fleet = decisions.get("fleet_plan")
    if fleet:  # the saving: what will be deployed, the two fleets packed by the plan
        print("[3/3] the saving: fleet plan (the devices that host the task models, beside the largest "
              "candidate for every task, planned the same way)\n")
        print(format_table(fleet_rows(fleet), FLEET_COLUMNS))
        print("\neach task sized alone (not the saving: every task priced on a device of its own)\n")
    else:
        print("[3/3] each task sized alone (chosen per task vs the largest candidate for everything)\n")
    print(format_table(summary_rows(records, unsized)))
    for rec in records:
        print("\n" + rec["summary"])
        for why in rec["why_not_smaller"]:
            print("   rejected:", why)
    if unsized:  # a task no candidate could size: what would be needed, and what was deployed
        print("\n" + "\n".join(unsized_lines(unsized)))
        if decisions["deployed"]:
            print(f"\ndeployed without {', '.join(u['task'] for u in unsized)} (deploy_partial is true)")
    if not done:  # the report of this run was written: the workflow stopped before deploying
        print(f"\nworkflow ended in state {status.state}: {status.exc or 'see the log above'}", file=sys.stderr)
        return 1
    print("\ndecision report (one HTML page):", RunLayout(Path(args.artifacts)).decision_report_file())
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; artifacts in {args.artifacts}")
    tasks = [rec["task"] for rec in records]
    print(SERVE_HINT.format(artifacts=args.artifacts,
                            task="ticket_routing" if "ticket_routing" in tasks else tasks[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
