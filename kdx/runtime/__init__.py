"""TORCH-FREE on-device runtime: bundle loading, backends, per-agent policies, profiling.

Nothing in this package may import torch; ``tests/runtime/test_torch_free.py`` enforces it.
"""
