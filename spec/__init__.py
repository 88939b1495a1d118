"""portspec: the executable specification of the KMR layers FeatureMixing and GatedFeatureFusion.

The spec never imports a deep-learning framework; implementations are reached through adapters
(:mod:`portspec.adapter`) that exchange NumPy arrays.
"""

__version__ = "0.1.0"
