"""PyTorch reference implementation of the portspec layers."""

from portspec.impls.torch.layers import FeatureMixing, GatedFeatureFusion

__all__ = ["FeatureMixing", "GatedFeatureFusion"]
