"""Batch runs (a room named now, filled later): counting many cases or slides in parallel.

What goes here: the batch runner that spreads the count of cases / slides over workers with
Ray, builds each worker's counter with the one counter factory and records the results through
``cases``.

Import rules:

* this is the only module of the package that imports ``ray`` (and lazily, inside functions:
  the package imports and runs without Ray installed);
* it may import ``pipeline``, ``slides``, ``cases``, ``deploy`` and the floors below them;
  nothing in the package imports ``batch`` except the command line (``tools``, ``cli``);
* never ``serve`` or ``studies``.

``tests/test_layout.py`` enforces the rules that can be checked on the imports.
"""
