"""Privacy that lasts across releases: keyed pseudonyms, the withdrawal registry and
privacy-preserving linkage across partners (docs/privacy.md)."""
