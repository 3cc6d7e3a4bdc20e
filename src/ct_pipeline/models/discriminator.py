"""A 3-D PatchGAN discriminator on (volume, back-projected views), X2CT-GAN style.

The views are smeared back along their rays onto the volume's grid (the mean
over views of each voxel's detector sample, the parameter-free form of
``lifting.GeometricLifting``) and stacked with the volume as a second channel,
so the critic judges whether a volume agrees with the radiographs it came
from, not only whether it looks like anatomy. Its output is one score per
overlapping patch (about 22 voxels across at three stride-2 layers).
"""

from __future__ import annotations

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models.lifting import SamplingGrids, sample_views

# Channel widths of the strided layers; LeakyReLU slope as in pix2pix / X2CT-GAN.
WIDTHS = (16, 32, 64)
SLOPE = 0.2


class ViewBackProjection(nn.Module):
    """(B, V, h, w) views -> (B, 1, n, n, n): each voxel's mean detector value over views."""

    def __init__(self, geometry: Geometry, grid: CubeGrid) -> None:
        super().__init__()
        self.grid = grid
        self.sampling = SamplingGrids(geometry, grid)

    def forward(self, views: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
        samples = sample_views(
            views.unsqueeze(2), self.sampling(angles_deg, views.device)
        )
        n = self.grid.size
        return samples.mean(dim=1).view(views.shape[0], 1, n, n, n)


class PatchDiscriminator3d(nn.Module):
    """Least-squares PatchGAN critic: (volume, views) -> (B, 1, p, p, p) patch scores."""

    def __init__(self, geometry: Geometry, grid: CubeGrid) -> None:
        super().__init__()
        self.back_projection = ViewBackProjection(geometry, grid)
        layers: list[nn.Module] = []
        c_in = 2
        for index, width in enumerate(WIDTHS):
            layers.append(nn.Conv3d(c_in, width, 4, stride=2, padding=1))
            # No normalisation on the first layer (pix2pix): it would erase the
            # intensity scale the critic should see.
            if index > 0:
                layers.append(nn.InstanceNorm3d(width, affine=True))
            layers.append(nn.LeakyReLU(SLOPE))
            c_in = width
        layers.append(nn.Conv3d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(
        self, volume: torch.Tensor, views: torch.Tensor, angles_deg: torch.Tensor
    ) -> torch.Tensor:
        context = self.back_projection(views, angles_deg).to(volume.dtype)
        return self.net(torch.cat([volume, context], dim=1))
