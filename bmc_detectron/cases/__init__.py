"""The case database (a room named now, filled later).

What goes here: ``models`` (cases, their fields and cells, counts, who reviewed what and when),
``repository`` (reading and writing them, one place for the queries), ``audit`` (an append-only
trail of every change to a case) and ``migrations`` (the schema's versions, applied in order).

Import rules:

* no web framework inside (no fastapi, starlette, uvicorn, ...): the web app (``serve``) and the
  tools use the case database, never the other way round, and it works without the ``serve``
  extra;
* it may import the floors below it (``data``, ``structures``, ``utils``, ``pipeline``'s report
  records); never ``serve``, ``tools``, ``batch`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
