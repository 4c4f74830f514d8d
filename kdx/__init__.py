"""kdx: resource-aware knowledge distillation for multi-agent RL on edge hardware."""

__version__ = "0.1.0"
