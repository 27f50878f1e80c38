"""Batch runs: counting many cases in parallel, each into its own report folder.

What goes here: ``jobs`` (the cases of a batch, the worker that builds its counter once and counts
a case per call, the summary's run facts masked for comparisons), ``processes`` (the no-extra
engine: a pool of spawned worker processes), ``ray_engine`` (Ray actors, local or on a cluster)
and ``runner`` (``run_batch``: the unfinished cases on an engine, a progress bar over cases;
``batch.json``). The command is ``bmc batch`` (:mod:`bmc_detectron.tools.batch`); the guide is
``docs/guides/batch.md``.

Import rules:

* this is the only module of the package that imports ``ray`` (and lazily, inside functions:
  the package imports and runs without Ray installed);
* it may import ``pipeline``, ``slides``, ``cases``, ``deploy`` and the floors below them;
  nothing in the package imports ``batch`` except the command line (``tools``, ``cli``);
* never ``serve`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
