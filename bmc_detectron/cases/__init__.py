"""The case database: counts kept as cases, reviewed cell by cell, signed, exported to training.

What goes here: ``models`` (the tables: cases and their versions, fields, cells, users,
sign-offs, the audit log), ``db`` (where the database is, its engine, its schema version checked at
every open, ``upgrade``), ``migrations`` (Alembic: the schema's revisions, applied in order),
``store`` (the fields' images, once each by SHA-256), ``importer`` (a count's report folder as a
case), ``queries`` (the case list, one case as stored, the model-vs-reviewer differential),
``review`` (reclassify / delete / add a cell, sign, re-open: each with its audit entry, stale row
versions refused), ``audit``, ``users`` (argon2 password hashes), ``labs`` (which lab's cases a
user sees), ``export`` (signed cases as COCO for ``merge-labels``, unreviewed cases ranked for
active learning), ``export_labelstudio`` (cases as Label Studio tasks: model boxes as
predictions, signed boxes as annotations, with the labelling config), ``logins`` (the login rate
limit, counted in the database: shared by every server on it) and ``integrity`` (whether the
database is whole, the same promises on SQLite and PostgreSQL: ``bmc cases check``). The command is
``bmc cases`` (:mod:`bmc_detectron.tools.cases`); the guide is ``docs/guides/cases.md``.

Import rules:

* no web framework inside (no fastapi, starlette, uvicorn, ...): the web app (``serve``) and the
  tools use the case database, never the other way round, and it works without the ``serve``
  extra;
* it may import the floors below it (``data``, ``structures``, ``utils``, ``pipeline``'s report
  records, ``active``'s acquisition scores); never ``serve``, ``tools``, ``batch`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
