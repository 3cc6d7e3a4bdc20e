"""Procedural chest CT phantoms, the embedded default data set."""

from ct_pipeline.phantoms.chest import (
    TISSUE_HU,
    Tissue,
    chest_phantom,
    chest_phantom_with_labels,
    generate_phantoms,
    phantom_loaders,
)

__all__ = [
    "TISSUE_HU",
    "Tissue",
    "chest_phantom",
    "chest_phantom_with_labels",
    "generate_phantoms",
    "phantom_loaders",
]
