"""daamlab: Density Adaptive Attention heads on frozen encoders' layer-wise features."""

from daamlab import resolvers as _resolvers  # noqa: F401  (registers ${name_of:...} for configs/data/ and configs/encoder/hf.yaml)

__version__ = "0.1.0"
