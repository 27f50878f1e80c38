"""Studies: the experiments behind the results pages (drivers, sweeps, report builders).

Each study has its own folder (its command modules, shell driver, notes; its page is generated
into ``docs/results/<study>/``). Studies use the ``bmc_detectron`` package; the package never
imports a study.
"""
