"""One module per resource: pages (``/``, ``/docs``), health (``/healthz``), model
(``/api/v1/model``), analyze (``/api/v1/analyze``), reports (``/api/v1/summary``,
``/api/v1/cells.csv``)."""
