"""Sharded datasets and their manifests, processing (normalise, veto, indices) and the generated sample.
May import `records` and `core`."""
