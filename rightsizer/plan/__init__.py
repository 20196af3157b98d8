"""Fleet plan (step ``plan``): pack the task models onto the cheapest GPUs, MIG slices or CPUs.

Public API::

    load_decisions(path) -> list[dict]                   # the records size_gpu writes
    plan_fleet(decisions, price_list="aws-on-demand-us-east-1", headroom=0.8,
               solver="auto") -> FleetPlan               # .baseline: the one-big-model fleet
    plan.to_dict(), plan.function_specs()                # JSON; one serving function per group
    fleet_figure(plan) -> plotly Figure                  # memory and time per device; plan or its to_dict()
    plan_app(app_path, **plan_fleet kwargs) -> FleetPlan # an app spec's planned models, no weights
    decisions_from_app(app_path) -> list[dict]           # the decision-like records it plans

See docs/sizing.md "Fleet plan". No MLRun import.
"""

from rightsizer.plan.fleet import (
    DEFAULT_HEADROOM, Demand, DeviceKind, FleetPlan, Group, Placement, baseline_demand, demands_from_decisions,
    device_kinds, load_decisions, plan_demands, plan_fleet, quality_of)
from rightsizer.plan.app import NOT_MEASURED, decisions_from_app, plan_app
from rightsizer.plan.pack import MAX_EXACT, SOLVERS, solve
from rightsizer.plan.plots import fleet_figure

__all__ = ["plan_fleet", "plan_demands", "plan_app", "decisions_from_app", "quality_of", "NOT_MEASURED",
           "load_decisions", "demands_from_decisions", "baseline_demand",
           "device_kinds", "FleetPlan", "Group", "Placement", "Demand", "DeviceKind", "fleet_figure", "solve",
           "DEFAULT_HEADROOM", "MAX_EXACT", "SOLVERS"]
