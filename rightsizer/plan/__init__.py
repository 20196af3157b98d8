"""Fleet plan (step ``plan``): pack the task models onto the cheapest GPUs, MIG slices or CPUs.

Public API::

    load_decisions(path) -> list[DecisionRecord]         # the records size_gpu writes (rightsizer.records)
    plan_fleet(decisions, price_list="aws-on-demand-us-east-1", headroom=DEFAULT_HEADROOM,
               solver="auto") -> FleetPlan               # .baseline: the one-big-model fleet
    plan.to_dict(), plan.function_specs()                # JSON; one serving function per group
    fleet_figure(plan) -> plotly Figure                  # memory and time per device; plan or its to_dict()
    plan_app(app_path, **plan_fleet kwargs) -> FleetPlan # an app spec's planned models, no weights
    decisions_from_app(app_path) -> list[dict]           # the decision records it plans, as JSON

Modules by job: ``demand`` (decision records -> what to place), ``devices`` (device kinds, one
demand sized alone on each), ``pack`` (the solver), ``fleet`` (the plan's types and function
specs), ``solve`` (sizing, packing, the plan), ``app`` (an app spec's planned models),
``plots``. See docs/sizing.md "Fleet plan". No MLRun import.
"""

from rightsizer.plan.demand import Demand, baseline_demand, demands_from_decisions, load_decisions, quality_of
from rightsizer.plan.devices import DeviceKind, device_kinds
from rightsizer.plan.fleet import FleetPlan, Group, Placement, plan_json
from rightsizer.plan.solve import plan_demands, plan_fleet
from rightsizer.plan.app import NOT_MEASURED, decisions_from_app, plan_app
from rightsizer.plan.pack import DEFAULT_HEADROOM, MAX_EXACT, SOLVERS, solve
from rightsizer.plan.plots import fleet_figure

__all__ = ["plan_fleet", "plan_demands", "plan_app", "decisions_from_app", "quality_of", "NOT_MEASURED",
           "load_decisions", "demands_from_decisions", "baseline_demand",
           "device_kinds", "FleetPlan", "Group", "Placement", "Demand", "DeviceKind", "fleet_figure", "solve", "plan_json",
           "DEFAULT_HEADROOM", "MAX_EXACT", "SOLVERS"]
