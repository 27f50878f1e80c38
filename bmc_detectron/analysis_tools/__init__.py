"""Analysis tools: instruments any user of the models may run (mmdetection's ``analysis_tools``).

Assignment visualiser (``show_assignment``), detection error analysis (``analyze_errors``),
latency / cost benchmark (``benchmark``), PyTorch vs ONNX Runtime latency (``onnx_bench``), the
gradient probe (``grad_probe``) and anchors fitted to a dataset (``fit_anchors``); each
``python -m bmc_detectron.analysis_tools.X --help``.
"""
