"""ctdc_harmonizer: partners' case extracts onto the CTDC Global Synthetic Data codebook v3."""

__version__ = "0.1.0"
