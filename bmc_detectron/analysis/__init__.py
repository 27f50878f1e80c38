"""Why a model behaves as it does: label-assignment analysis and detection error analysis.

- :mod:`.assignment` (+ :mod:`.assignment_plots`, :mod:`.band_cell`): what every registered
  assigner labels positive on real images, ATSS' per-level statistics, dataset statistics;
  ``python -m bmc_detectron.analysis_tools.show_assignment``.
- :mod:`.tide` (+ :mod:`.confusion`, :mod:`.gallery`, :mod:`.error_plots`): TIDE-style attribution
  of AP50 to classification, localisation, cls+loc, duplicate, background and missed errors,
  overall and by crowding; ``python -m bmc_detectron.analysis_tools.analyze_errors``.
- :mod:`.anchor_fit`: anchor sizes per level and shared ratios fitted to the gt shapes at the
  training resolution; ``python -m bmc_detectron.analysis_tools.fit_anchors``.
- :mod:`.inference` (model and data plumbing), :mod:`.geometry`, :mod:`.report` (markdown
  tables); figures are drawn with :mod:`bmc_detectron.reporting.plots`.
"""
