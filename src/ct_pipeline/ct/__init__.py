"""CT volume I/O and preprocessing."""

from ct_pipeline.ct.volume import CTVolume

__all__ = ["CTVolume"]
