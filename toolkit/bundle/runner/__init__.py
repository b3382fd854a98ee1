"""The on-device runner, copied into every bundle as run.py + edgespec_runner/ (stdlib, numpy, the runtime only)."""
