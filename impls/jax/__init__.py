"""Flax NNX reference implementation."""

from portspec.impls.jax.layers import FeatureMixing, GatedFeatureFusion

__all__ = ["FeatureMixing", "GatedFeatureFusion"]
