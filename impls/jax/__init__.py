"""Flax NNX reference implementation."""

from impls.jax.layers import FeatureMixing, GatedFeatureFusion

__all__ = ["FeatureMixing", "GatedFeatureFusion"]
