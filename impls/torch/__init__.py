"""PyTorch reference implementation of the portspec layers."""

from impls.torch.layers import FeatureMixing, GatedFeatureFusion

__all__ = ["FeatureMixing", "GatedFeatureFusion"]
