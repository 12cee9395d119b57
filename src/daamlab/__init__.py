"""daamlab: Density Adaptive Attention heads on frozen encoders' layer-wise features."""

__version__ = "0.1.0"
