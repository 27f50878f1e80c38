"""Measuring library of the instruments (``bmc_detectron.analysis_tools``) and the studies.

- :mod:`.measure`: timing (one latency loop, one training-step loop), throughput, COCO metrics;
  the timing summary and the interleaving loop are :mod:`bmc_detectron.reporting.timing`'s;
- :mod:`.model_cost`: parameters and GFLOPs;
- :mod:`.memory`: the memory meter (process RSS / CUDA max allocated, or peak live tensors);
- :mod:`.inputs`: image records, latency inputs (:class:`~.inputs.TimingInputs`), random
  training batches;
- :mod:`.names`: one name per config file;
- :mod:`.cost`: the full cost record of one config;
- :mod:`.side_by_side`: several configs timed side by side in interleaved rounds;
- :mod:`.report`: the benchmark's page builders (generic tables, plots and the machine
  description: :mod:`bmc_detectron.reporting`).
"""
