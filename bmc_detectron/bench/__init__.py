"""Measuring library of the command-line tools (``bmc_detectron.tools``).

- :mod:`.measure`: timing (one latency loop, one training-step loop), parameters, GFLOPs,
  throughput, COCO metrics;
- :mod:`.memory`: the memory meter (process RSS / CUDA max allocated, or peak live tensors);
- :mod:`.inputs`: image records, latency inputs, random training batches;
- :mod:`.report`: markdown tables, plots, machine description;
- :mod:`.precision`: float32 / bf16 / bf16 + channels-last side by side; :mod:`.profile`:
  torch.profiler time per stage of a training iteration;
- :mod:`.ablation_report`: aggregation of ablation runs (means, paired differences, intervals);
- :mod:`.runs`: planning, running and reading the training runs of an ablation.
"""
