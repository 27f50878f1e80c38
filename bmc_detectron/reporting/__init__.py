"""Reporting primitives shared by the package and the studies (a low floor: imports only
:mod:`bmc_detectron.utils` and third-party libraries).

- :mod:`.tables`: number formatting of table cells (:func:`~.tables.fmt`), GitHub markdown
  tables (:func:`~.tables.markdown_table`, :func:`~.tables.append_markdown_row`);
- :mod:`.provenance`: what a page was made on and with (:func:`~.provenance.machine_info`,
  :func:`~.provenance.shell_join` of a command line);
- :mod:`.plots`: matplotlib without a display (:func:`~.plots.pyplot` with the Agg backend,
  :func:`~.plots.new_figure`, :func:`~.plots.save_figure`) and two generic charts;
- :mod:`.timing`: the timing summary (:func:`~.timing.summarize_ms`, the one p90) and the one
  interleaving loop of latency comparisons (:func:`~.timing.interleaved_latency`).
"""
