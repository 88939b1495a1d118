"""Keras 3 reference implementation (runs on the jax, torch and tensorflow backends)."""

from portspec.impls.keras.layers import FeatureMixing, GatedFeatureFusion

__all__ = ["FeatureMixing", "GatedFeatureFusion"]
