"""The plain back-projection U-Net: the simple reference the hybrid must beat.

Each view's raw line integrals are smeared back along their own rays onto the
output grid (an unfiltered back-projection with the renderer's geometry, one
channel per view, in view order), then a 3-level 3-D U-Net (16/32/64
channels, two 3x3x3 convs per level with InstanceNorm and LeakyReLU(0.1),
transposed-convolution upsampling, skip concatenation) maps them to the
volume. No 2-D encoder, no attention, no deep supervision: if the hybrid does
not beat this at equal training time, its extra parts have not earned their
place.
"""

from __future__ import annotations

import torch
from torch import nn

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.drr.geometry import Geometry
from ct_pipeline.models.blocks import Pointwise3d, SameConv3d
from ct_pipeline.models.encoder2d import LINE_INTEGRAL_SCALE
from ct_pipeline.models.lifting import SamplingGrids, sample_views
from ct_pipeline.models.output import ModelOutput, unit_range

WIDTHS = (16, 32, 64)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (c_in, c_out):
        layers += [
            SameConv3d(c, c_out, bias=True),
            nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(0.1),
        ]
    return nn.Sequential(*layers)


class BackprojectionUNet(nn.Module):
    """``model(views (B, V, H, W), angles_deg (V,))`` -> {"volume", "deep", "attention"}.

    The same call and output contract as ``ReconstructionNet``; the number of
    views is fixed at construction (one input channel per view).
    """

    def __init__(self, geometry: Geometry, grid: CubeGrid, num_views: int) -> None:
        super().__init__()
        if grid.size % 4:
            raise ValueError(
                f"the grid's size must be a multiple of 4, got {grid.size}"
            )
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.geometry, self.grid, self.num_views = geometry, grid, num_views
        self.sampling = SamplingGrids(geometry, grid)
        c = WIDTHS
        self.enc = nn.ModuleList(
            [_double_conv(num_views, c[0]), _double_conv(c[0], c[1])]
        )
        self.bottom = _double_conv(c[1], c[2])
        self.pool = nn.MaxPool3d(2)
        self.ups = nn.ModuleList(
            [nn.ConvTranspose3d(c[2], c[1], 2, 2), nn.ConvTranspose3d(c[1], c[0], 2, 2)]
        )
        self.dec = nn.ModuleList(
            [_double_conv(2 * c[1], c[1]), _double_conv(2 * c[0], c[0])]
        )
        self.head = Pointwise3d(c[0], 1)

    def backproject(
        self, views: torch.Tensor, angles_deg: torch.Tensor
    ) -> torch.Tensor:
        """(B, V, H, W) line integrals -> (B, V, n, n, n), each view along its rays."""
        b, v = views.shape[:2]
        grid = self.sampling(angles_deg, views.device)
        samples = sample_views(views[:, :, None] / LINE_INTEGRAL_SCALE, grid)
        n = self.grid.size
        return samples.view(b, v, n, n, n)

    def forward(
        self,
        views: torch.Tensor,
        angles_deg: torch.Tensor,
        return_attention: bool = False,
    ) -> ModelOutput:
        if views.ndim != 4 or views.shape[1] != self.num_views:
            raise ValueError(
                f"expected views (B, {self.num_views}, H, W), got {tuple(views.shape)}"
            )
        x = self.backproject(views, angles_deg)
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, block, skip in zip(self.ups, self.dec, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return {"volume": unit_range(self.head(x)), "deep": [], "attention": None}
