"""Views of a patient rendered from anatomy finer than the cube a model predicts.

A radiograph integrates the patient, not the coarse cube the network
reconstructs: the DRR stage (training data) and the real-CT check (scoring)
both render views from the CT resampled ``oversample`` times finer over the
cube's field, centred on the cube, so the views cannot be explained exactly
by the cube.
"""

from __future__ import annotations

import numpy as np
import torch

from ct_pipeline.ct import CTVolume, CubeGrid
from ct_pipeline.ct.preprocess import finer_grid, resample_to_grid
from ct_pipeline.drr.drrset import DRRSet
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.drr.projector import render_drrs


def views_of_finer_anatomy(
    ct: CTVolume,
    cube: CubeGrid,
    geometry: Geometry,
    angles_deg: list[float],
    mu_water_per_mm: float,
    oversample: int,
    *,
    mirrored: bool = False,
    device: str | torch.device | None = None,
) -> DRRSet:
    """The DRR set of ``ct`` resampled on ``cube`` made ``oversample`` times
    finer, the isocentre at the cube's centre; with ``mirrored``, also the
    views of the patient mirrored left-right about it."""
    anatomy = resample_to_grid(ct, finer_grid(cube, oversample))
    volumes = [anatomy]
    if mirrored:
        # Array axis i is R (RAS+): the flip mirrors about the cube's centre.
        volumes.append(CTVolume(hu=anatomy.hu[::-1].copy(), affine=anatomy.affine))
    views = [
        render_drrs(volume, geometry, angles_deg, mu_water_per_mm, device=device)
        for volume in volumes
    ]
    return DRRSet(
        projections=views[0],
        angles_deg=np.asarray(angles_deg, dtype=np.float64),
        geometry=geometry,
        isocentre_mm=np.asarray(cube.centre_mm, dtype=np.float64),
        mu_water_per_mm=float(mu_water_per_mm),
        anatomy_spacing_mm=finer_grid(cube, oversample).spacing_mm,
        mirrored_projections=views[1] if mirrored else None,
    )
