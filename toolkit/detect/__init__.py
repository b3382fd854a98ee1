"""Detection specialists with Ultralytics YOLO: synthetic data, training, head slicing, ONNX export, bench.

Submodules import Ultralytics only inside functions, through `offline.ultralytics_env`, so that it runs offline,
never auto-installs, and keeps its settings and outputs inside edgespec's run directories.
"""
