"""Measuring library of the latency / cost benchmark
(:mod:`bmc_detectron.analysis_tools.benchmark`) and of the studies that time models.

- :mod:`.measure`: timing (one latency loop, one training-step loop), throughput, COCO metrics;
  the timing summary and the interleaving loop are :mod:`bmc_detectron.reporting.timing`'s;
- :mod:`.model_cost`: parameters and GFLOPs;
- :mod:`.memory`: the memory meter (process RSS / CUDA max allocated, or peak live tensors);
- :mod:`.inputs`: image records, latency inputs, random training batches;
- :mod:`.report`: the benchmark's page builders (generic tables, plots and the machine
  description: :mod:`bmc_detectron.reporting`).
"""
