"""The halo estimate's refinement: it reaches a halo between the grid's
values, stays within the grid's span, and a point it reaches again is the
same halo (so its score is looked up, not computed again)."""

from __future__ import annotations

import math

from ct_pipeline.radiographs import ScatterModel
from ct_pipeline.scatter_estimate import (
    SCATTER_FRACTIONS,
    SCATTER_SIGMAS_MM,
    _refined,
)


def _search(peak: ScatterModel) -> tuple[ScatterModel, set[ScatterModel]]:
    """The refinement from 0.5 / 72 mm on a score that peaks at ``peak``,
    and every halo it scored."""
    scored: set[ScatterModel] = set()

    def score(halo: ScatterModel) -> float:
        scored.add(halo)
        return -(
            math.log(halo.fraction / peak.fraction) ** 2
            + math.log(halo.sigma_mm / peak.sigma_mm) ** 2
        )

    return _refined(ScatterModel(0.5, 72.0), score), scored


def test_the_refinement_finds_a_halo_between_grid_values_to_its_finest_step():
    found, scored = _search(ScatterModel(0.8, 90.0))
    finest = math.log(1.2) / 4
    assert abs(math.log(found.fraction / 0.8)) <= finest / 2
    assert abs(math.log(found.sigma_mm / 90.0)) <= finest / 2
    # Moving on and back lands on the very halo it left, not one a rounding
    # error away.
    points = {
        (round(math.log(h.fraction) / finest), round(math.log(h.sigma_mm) / finest))
        for h in scored
    }
    assert len(points) == len(scored)


def test_the_refinement_stays_within_the_grids_span():
    found, scored = _search(ScatterModel(5.0, 1000.0))
    assert all(
        min(SCATTER_FRACTIONS) <= h.fraction <= max(SCATTER_FRACTIONS)
        and min(SCATTER_SIGMAS_MM) <= h.sigma_mm <= max(SCATTER_SIGMAS_MM)
        for h in scored
    )
    assert found.fraction > 0.9 and found.sigma_mm > 100.0
