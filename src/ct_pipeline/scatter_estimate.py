"""The scatter halo of a patient's films, estimated with the trained network:
the halo whose removal leaves views that the network's volume explains best."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ct_pipeline.inference import ModelBundle, network_volume, reprojection_scores
from ct_pipeline.radiographs import (
    NO_SCATTER,
    LevelledFilm,
    ScatterModel,
    levelled_to_views,
)

# The halos a film system may add (fraction, then width in the detector
# plane, mm), from none to a chest without an anti-scatter grid; an estimate
# starts from the best of them. Chest scatter reaches 5-10 cm across the
# detector.
SCATTER_FRACTIONS = (0.2, 0.35, 0.5, 0.7, 1.0)
SCATTER_SIGMAS_MM = (48.0, 72.0, 108.0)
# The grid above is a start: a halo taken out 25 % narrower or 33 % wider,
# or 40 % weaker or stronger, than the real one still costs 3-5 dB
# (benchmarks/results/radiographs/scatter.md). So the best of the grid is
# refined by a pattern search in fraction and sigma: each tried
# SCATTER_REFINE_STEP times larger and smaller, moving to the best neighbour
# that scores higher, the step's square root taken whenever none does,
# SCATTER_REFINE_HALVINGS times: steps of 1.2, 1.095 and 1.047, the last a few
# per cent, finer than what the films' noise and the network's score resolve.
SCATTER_REFINE_STEP = 1.2
SCATTER_REFINE_HALVINGS = 2
# At most this many moves in all. Reaching a halo between the grid's values
# takes about 3 moves of 1.2 per parameter (0.35 is 1.75 times 0.2) and one
# of each finer step, 10 in all; the cap only stops a search that wanders.
SCATTER_REFINE_MOVES = 12


def _within_grid(halo: ScatterModel) -> bool:
    """Whether ``halo`` lies within the grid's span: the search stays there."""
    return min(SCATTER_FRACTIONS) <= halo.fraction <= max(SCATTER_FRACTIONS) and min(
        SCATTER_SIGMAS_MM
    ) <= halo.sigma_mm <= max(SCATTER_SIGMAS_MM)


def _refined(
    start: ScatterModel, score: Callable[[ScatterModel], float]
) -> ScatterModel:
    """The pattern search from ``start`` (the comment on SCATTER_REFINE_STEP).

    Points are ``start`` times SCATTER_REFINE_STEP to a power in steps of the
    finest, indexed by integers: a point reached twice is the same halo, so
    its score is looked up, not computed again."""
    subdivisions = 2**SCATTER_REFINE_HALVINGS

    def halo(at: tuple[int, int]) -> ScatterModel:
        return ScatterModel(
            start.fraction * SCATTER_REFINE_STEP ** (at[0] / subdivisions),
            start.sigma_mm * SCATTER_REFINE_STEP ** (at[1] / subdivisions),
        )

    at, stride, moves = (0, 0), subdivisions, 0
    while stride and moves < SCATTER_REFINE_MOVES:
        neighbours = [
            n
            for n in (
                (at[0] + stride, at[1]),
                (at[0] - stride, at[1]),
                (at[0], at[1] + stride),
                (at[0], at[1] - stride),
            )
            if _within_grid(halo(n))
        ]
        better = max(neighbours, key=lambda n: score(halo(n)))
        if score(halo(better)) > score(halo(at)):
            at, moves = better, moves + 1
        else:
            stride //= 2
    return halo(at)


@torch.no_grad()
def estimate_scatter(
    network: nn.Module,
    bundle: ModelBundle,
    levelled: Sequence[LevelledFilm],
    mu_water_per_mm: float,
) -> tuple[ScatterModel, dict[ScatterModel, float]]:
    """The halo (none, or the best of SCATTER_FRACTIONS x SCATTER_SIGMAS_MM
    refined by a pattern search within their span) whose removal from a
    patient's films leaves views that the network's volume explains best, and
    each candidate's reprojection NCC.

    ``levelled`` are the films as ``level_films`` leaves them for ``bundle``'s
    geometry and views: each candidate is taken out of the films themselves,
    as predict then takes out the chosen one, and only what a halo changes is
    computed again for each (``levelled_to_views``).

    A halo left in, or one taken out too strongly, leaves views that no body
    of the kind the network learned would cast; the network's volume then
    reprojects to views unlike them. Measured on test phantoms with simulated
    halos (benchmarks/radiograph_check.py), the choice is none on clean views
    and near the true halo otherwise.
    """
    scores: dict[ScatterModel, float] = {}

    def score(candidate: ScatterModel) -> float:
        if candidate not in scores:
            views = levelled_to_views(
                levelled, bundle.geometry, mu_water_per_mm, candidate
            )
            volume = network_volume(network, bundle, views)
            scores[candidate] = reprojection_scores(volume, views)["reprojection/ncc"]
        return scores[candidate]

    best = max(
        [NO_SCATTER]
        + [
            ScatterModel(fraction, sigma_mm)
            for fraction in SCATTER_FRACTIONS
            for sigma_mm in SCATTER_SIGMAS_MM
        ],
        key=score,
    )
    if best != NO_SCATTER:
        best = _refined(best, score)
    return best, scores
