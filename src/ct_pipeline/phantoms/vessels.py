"""Branching pulmonary vessel trees, drawn as points with a radius each."""

from __future__ import annotations

import numpy as np


def _turn(direction: np.ndarray, angle_rad: float, axis_hint: np.ndarray) -> np.ndarray:
    """Rotate ``direction`` by ``angle_rad`` toward a direction perpendicular to it."""
    side = axis_hint - direction * (axis_hint @ direction)
    side /= np.linalg.norm(side) + 1e-9
    turned = np.cos(angle_rad) * direction + np.sin(angle_rad) * side
    return turned / np.linalg.norm(turned)


def vessel_tree(
    rng: np.random.Generator,
    root_mm: np.ndarray,
    trunk_directions: list[np.ndarray],
    depth: int = 5,
    trunk_length_mm: float = 40.0,
    trunk_radius_mm: float = 5.0,
    step_mm: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points (m, 3) along a binary tree of segments and their vessel radii (m,).

    Each segment splits in two children turned 20-40 degrees to either side of
    a random plane, 0.8 x longer-to-shorter and 0.75 x thinner (Murray-like).
    """
    points, radii = [], []
    stack = [
        (root_mm, d / np.linalg.norm(d), trunk_length_mm, trunk_radius_mm, 0)
        for d in trunk_directions
    ]
    while stack:
        start, direction, length, radius, level = stack.pop()
        count = max(1, int(length / step_mm))
        t = (np.arange(count)[:, None] + 0.5) * (length / count)
        points.append(start + t * direction)
        radii.append(np.full(count, radius))
        if level == depth:
            continue
        end = start + length * direction
        hint = rng.normal(size=3)
        for sign in (1.0, -1.0):
            angle = np.deg2rad(rng.uniform(20.0, 40.0)) * sign
            child = _turn(direction, angle, hint)
            child_length = length * rng.uniform(0.7, 0.9)
            stack.append((end, child, child_length, radius * 0.75, level + 1))
    return np.concatenate(points), np.concatenate(radii)
