"""Staged rows onto the codebook v3: value maps, the derivation registry, data contracts,
the coverage gate and the restricted list of unmapped values."""
