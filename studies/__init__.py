"""Studies: the experiments behind the results pages (drivers, sweeps, report builders).

Each study has its own folder: its command modules, its shell driver(s) (they only run
commands), its page builder (page text is assembled in Python, :mod:`studies.pages`), its notes
and its manifest ``study.yaml`` (title, pages and the commands that write them, planned configs
and seeds; the status lines of a page come from it and the run folders, :mod:`studies.status`).
Pages are generated into ``docs/results/<study>/``. Studies use the ``bmc_detectron`` package;
the package never imports a study.
"""
