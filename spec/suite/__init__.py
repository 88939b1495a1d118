"""The clause suite: one check per clause family, run against any adapter."""
