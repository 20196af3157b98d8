"""The report step's tables, chart and page: the run's summary (``summary``), the payoff
chart (``summary_plots``) and the HTML decision report (``page``).

The steps' own charts live beside their steps (``rightsizer.select_plots``,
``rightsizer.evaluate_plots``, ``rightsizer.size_gpu_tables``); what they all share (the
palette, rounding, JSON cells) is ``rightsizer.display``.
"""

from rightsizer.report.page import PLACEMENT_COLUMNS, decision_report_html, placement_rows
from rightsizer.report.summary import (FLEET_COLUMNS, SUMMARY_COLUMNS, TOTAL_RULES, fleet_price_list,
                                       fleet_rows, format_table, summary_rows, unsized_lines)
from rightsizer.report.summary_plots import summary_figure

__all__ = ["FLEET_COLUMNS", "PLACEMENT_COLUMNS", "SUMMARY_COLUMNS", "TOTAL_RULES", "decision_report_html",
           "fleet_price_list", "fleet_rows", "format_table", "placement_rows", "summary_figure",
           "summary_rows", "unsized_lines"]
