"""ct_pipeline: CT volumes -> multi-view DRRs -> hybrid CNN-ViT reconstruction."""

__version__ = "0.1.0"
