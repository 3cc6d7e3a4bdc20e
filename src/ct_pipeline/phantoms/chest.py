"""Procedural chest CT phantoms: the embedded default data set.

Each seed draws one patient: body outline with skin and fat, chest wall
muscle, two textured lungs with branching vessels, domed diaphragm with the
liver and a gas-capped stomach beneath, heart with chambers and pericardial
fat, aorta, pulmonary arteries and SVC, a kyphotic spine (vertebral bodies,
discs, canal, pedicles/laminae, spinous and transverse processes), twelve rib
pairs with costal cartilage, the sternum, and 0-3 lung nodules. Anatomy is
drawn in a patient frame (x -> patient Right, y -> Anterior, z -> Superior) in
millimetres and placed in the scanner with a small random rotation and shift,
so the field and the voxel size are free parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import IntEnum
from functools import partial

import numpy as np
from scipy import ndimage

from ct_pipeline.ct.grid import CubeGrid
from ct_pipeline.ct.volume import CTVolume
from ct_pipeline.phantoms.body import Habitus
from ct_pipeline.phantoms.shapes import (
    PatientFrame,
    ellipsoid,
    render_tubes,
    splat,
)
from ct_pipeline.phantoms.vessels import vessel_tree
from ct_pipeline.progress import progress

logger = logging.getLogger(__name__)


# Thickness of cortical bone (vertebrae, ribs, sternum: about 1-2 mm).
CORTEX_MM = 1.5


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    SOFT_TISSUE = 2
    LUNG = 3
    HEART = 4
    BLOOD = 5
    LIVER = 6
    CARTILAGE = 7
    TRABECULAR = 8
    CORTICAL = 9
    NODULE = 10
    TABLE = 11


# Per-patient mean HU of each tissue is drawn from these ranges (literature
# values for non-contrast CT). Nodules draw one value each.
TISSUE_HU: dict[Tissue, tuple[float, float]] = {
    Tissue.AIR: (-1000.0, -1000.0),
    Tissue.FAT: (-120.0, -80.0),
    Tissue.SOFT_TISSUE: (30.0, 55.0),
    Tissue.LUNG: (-900.0, -820.0),
    Tissue.HEART: (30.0, 45.0),
    Tissue.BLOOD: (40.0, 55.0),
    Tissue.LIVER: (50.0, 70.0),
    Tissue.CARTILAGE: (100.0, 160.0),
    Tissue.TRABECULAR: (180.0, 320.0),
    Tissue.CORTICAL: (1000.0, 1500.0),  # of pure cortex; voxels hold less
    Tissue.NODULE: (30.0, 100.0),
    Tissue.TABLE: (-450.0, 50.0),  # carbon-fibre shell over foam, averaged
}


def chest_phantom(seed: int, size_vox: int = 96, spacing_mm: float = 4.0) -> CTVolume:
    """One procedural chest CT in HU on a RAS+ cube centred on world 0."""
    return chest_phantom_with_labels(seed, size_vox, spacing_mm)[0]


def phantom_loaders(
    n: int, seed: int, size_vox: int = 96, spacing_mm: float = 4.0
) -> dict[str, Callable[[], CTVolume]]:
    """``n`` phantoms keyed "phantom_000", ..., each made when called (patient i
    uses seed ``seed + i``): a caller can stream any number of them."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return {
        f"phantom_{i:03d}": partial(chest_phantom, seed + i, size_vox, spacing_mm)
        for i in range(n)
    }


def generate_phantoms(
    n: int, seed: int, size_vox: int = 96, spacing_mm: float = 4.0
) -> dict[str, CTVolume]:
    """The phantoms of ``phantom_loaders``, made now."""
    loaders = phantom_loaders(n, seed, size_vox, spacing_mm)
    return {
        pid: make()
        for pid, make in progress(loaders.items(), desc="phantoms", show=n >= 8)
    }


def chest_phantom_with_labels(
    seed: int, size_vox: int = 96, spacing_mm: float = 4.0
) -> tuple[CTVolume, np.ndarray]:
    """The phantom and its (I, J, K) uint8 ``Tissue`` label map."""
    if size_vox < 2 or spacing_mm <= 0:
        raise ValueError(
            f"need size_vox >= 2 and spacing_mm > 0, got {size_vox}, {spacing_mm}"
        )
    rng = np.random.default_rng(seed)
    grid = CubeGrid(size_vox, spacing_mm)
    torso = Torso(rng)
    habitus = Habitus(rng, torso)
    frame = PatientFrame(habitus.yaw_deg, habitus.shift_mm, habitus.scale)
    p = frame.coords(grid)
    labels = np.full((size_vox,) * 3, Tissue.AIR, dtype=np.uint8)

    torso.paint_wall(p, labels)
    thorax = torso.paint_cavity(p, labels)
    organs, gas = habitus.abdomen_masks(p, torso)
    labels[organs] = Tissue.LIVER
    labels[gas] = Tissue.AIR
    heart, chambers, heart_fat = torso.heart_masks(p)
    clavicles = [
        (line, r, int(Tissue.CORTICAL), 0.0) for line, r in habitus.clavicles(torso)
    ]
    tube_labels, vessel_clearance = render_tubes(grid, frame, torso.tubes() + clavicles)
    spine_bone, spine_soft, spine_keepout = torso.spine_masks(p)
    sternum = torso.sternum_mask(p)

    lung = thorax & (np.abs(p[0]) > torso.mediastinum_mm)
    lung &= ~(heart_fat | vessel_clearance | spine_keepout)
    labels[lung] = Tissue.LUNG
    labels[heart_fat] = Tissue.FAT
    labels[heart] = Tissue.HEART
    labels[chambers] = Tissue.BLOOD
    is_tube = tube_labels >= 0
    labels[is_tube] = tube_labels[is_tube]
    labels[spine_soft] = Tissue.SOFT_TISSUE
    labels[habitus.neck_mask(p)] = Tissue.AIR
    breast, gland = habitus.breast_masks(p, torso)
    labels[breast & (labels == Tissue.AIR)] = Tissue.FAT
    labels[gland & (labels == Tissue.FAT)] = Tissue.SOFT_TISSUE
    arm, humerus = habitus.arm_masks(p, torso)
    labels[arm & (labels == Tissue.AIR)] = Tissue.SOFT_TISSUE
    labels[np.broadcast_to(habitus.table_mask(p, torso), labels.shape)] = Tissue.TABLE
    scapula = habitus.scapula_mask(p, torso) & (labels != Tissue.LUNG)
    bone = spine_bone | sternum | (tube_labels == Tissue.CORTICAL) | scapula
    _paint_bone(labels, bone | (humerus & arm), spacing_mm)
    labels[np.broadcast_to(habitus.outside_scan(p), labels.shape)] = Tissue.AIR
    lung = labels == Tissue.LUNG
    body = labels != Tissue.AIR

    level = {t: rng.uniform(*TISSUE_HU[t]) for t in Tissue}
    if habitus.contrast:
        level[Tissue.BLOOD] = habitus.blood_hu
    marrow = level[Tissue.TRABECULAR]
    level[Tissue.CORTICAL] = marrow + _cortex_fill(spacing_mm) * (
        level[Tissue.CORTICAL] - marrow
    )
    hu = np.array([level[t] for t in Tissue], dtype=np.float32)[labels]
    vessels = _vessel_fraction(grid, frame, torso)
    texture = _lung_texture(rng, p, torso, grid)
    contrast = level[Tissue.BLOOD] - level[Tissue.LUNG]
    hu[lung] += texture[lung] + contrast * vessels[lung]
    _paint_nodules(rng, labels, hu, spacing_mm)
    noise_hu = rng.uniform(5.0, 12.0)
    hu[body] += noise_hu * rng.standard_normal(int(body.sum()), dtype=np.float32)
    np.maximum(hu, np.float32(-1024.0), out=hu)
    return CTVolume(hu=hu, affine=grid.affine), labels


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


class Torso:
    """One patient's random anatomy (mm, patient frame) and the masks it draws.

    All random numbers are drawn in ``__init__`` in a fixed order, so a seed
    gives the same patient whatever the grid.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        # Trunk: superellipse outline, flatter at the back (lying on the table).
        # Habitus: width 290-370 mm (x the frame's scale), width-to-depth
        # 1.25-1.55 (round to flat chests), subcutaneous fat thin to obese.
        self.half_width = _u(rng, 145.0, 185.0)
        self.half_depth = self.half_width / _u(rng, 1.25, 1.55)
        self.power_front, self.power_back = _u(rng, 2.0, 2.5), _u(rng, 2.8, 3.6)
        self.skin, self.fat = 2.5, _u(rng, 4.0, 40.0)
        self.muscle, self.back_extra = _u(rng, 8.0, 14.0), _u(rng, 10.0, 22.0)
        wall = self.skin + self.fat + self.muscle
        self.cavity_a = self.half_width - wall
        self.cavity_b = self.half_depth - wall - self.back_extra / 2
        self.cavity_y = self.back_extra / 2
        # Lungs: apex height, inspiration depth (dome height) and the depth of
        # the costophrenic recesses set lung shape and volume.
        self.apex_z, self.taper_mm = _u(rng, 120.0, 170.0), _u(rng, 55.0, 95.0)
        self.dome_right = _u(rng, -100.0, -30.0)
        self.dome_left = self.dome_right - _u(rng, 5.0, 30.0)  # liver lifts the right
        self.dome_depth = _u(rng, 35.0, 95.0)
        self.mediastinum_mm = _u(rng, 10.0, 30.0)
        # Below the diaphragm: liver on the right, stomach with a gas cap on the left.
        self.liver_left_x, self.liver_depth = (
            _u(rng, -40.0, -10.0),
            _u(rng, 130.0, 180.0),
        )
        self.stomach = np.array([_u(rng, -90, -60), _u(rng, 0, 30), 0.0])
        self.stomach_r = _u(rng, 25.0, 38.0)
        # Heart: ellipsoid on the diaphragm, long axis base -> apex pointing
        # anterior, left and inferior.
        yaw, tilt = np.deg2rad(_u(rng, 125, 150)), np.deg2rad(_u(rng, 15, 30))
        long_axis = np.array(
            [np.cos(yaw) * np.cos(tilt), np.sin(yaw) * np.cos(tilt), -np.sin(tilt)]
        )
        side = np.cross([0.0, 0.0, 1.0], long_axis)
        side /= np.linalg.norm(side)
        self.heart_axes = np.stack([long_axis, side, np.cross(long_axis, side)], axis=1)
        size = _u(rng, 0.85, 1.2)  # small to enlarged hearts
        self.heart_semi = size * np.array(
            [_u(rng, 55, 68), _u(rng, 42, 52), _u(rng, 40, 50)]
        )
        self.heart_centre = np.array(
            [
                -_u(rng, 20.0, 50.0),
                self.cavity_y + _u(rng, 12.0, 30.0),
                (self.dome_right + self.dome_left) / 2 + _u(rng, 22.0, 45.0),
            ]
        )
        # Spine: vertebral bodies in the posterior cavity, thoracic kyphosis.
        self.vert_a, self.vert_b = _u(rng, 18.0, 24.0), _u(rng, 14.0, 18.0)
        self.spine_y = self.cavity_y - self.cavity_b + _u(rng, 20.0, 28.0) + self.vert_b
        self.kyphosis = _u(rng, 5.0, 15.0)
        self.period, self.disc = _u(rng, 25.0, 31.0), _u(rng, 5.0, 8.0)
        self.t1_z = self.apex_z + _u(rng, 5.0, 25.0)
        self.canal_r, self.arch_w = _u(rng, 7.0, 9.0), _u(rng, 5.0, 7.0)
        self.spinous_len, self.transverse_len = _u(rng, 15.0, 22.0), _u(rng, 22.0, 30.0)
        self.rib_radius, self.rib_drop = _u(rng, 4.5, 6.0), _u(rng, 35.0, 60.0)
        self.rib_front = [_u(rng, 120.0, 140.0) for _ in range(7)]
        self.vessels = self._draw_vessels(rng)
        self.trees = self._draw_trees(rng)

    # -- trunk and cavity -------------------------------------------------

    def _outline(self, p, inset_mm: float) -> np.ndarray:
        power = np.where(p[1] >= 0, self.power_front, self.power_back)
        a, b = self.half_width - inset_mm, self.half_depth - inset_mm
        return (np.abs(p[0]) / a) ** power + (np.abs(p[1]) / b) ** power <= 1.0

    def paint_wall(self, p, labels: np.ndarray) -> np.ndarray:
        """Skin, subcutaneous fat and muscle; returns the body mask."""
        # Outlines depend on (x, y) only; broadcast them along k.
        body = np.broadcast_to(self._outline(p, 0.0), labels.shape)
        labels[body] = Tissue.SOFT_TISSUE
        fat = self._outline(p, self.skin) & ~self._outline(p, self.skin + self.fat)
        labels[np.broadcast_to(fat, labels.shape)] = Tissue.FAT
        return body

    def taper(self, z: np.ndarray) -> np.ndarray:
        """Cavity scale toward the lung apices (1 below, 0 at the apex)."""
        start = self.apex_z - self.taper_mm
        t = np.clip((z - start) / self.taper_mm, 0.0, None)
        return np.sqrt(np.clip(1.0 - t**2, 0.0, None))

    def diaphragm_z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height of the diaphragm domes: highest mid-hemithorax, low at the edges."""
        dome = np.where(x > 0, self.dome_right, self.dome_left)
        half = self.cavity_a / 2
        spread = ((np.abs(x) - half) / half) ** 2 + (
            (y - self.cavity_y) / self.cavity_b
        ) ** 2
        return dome - self.dome_depth * spread

    def cavity(self, p, scale) -> np.ndarray:
        return (p[0] / (self.cavity_a * scale + 1e-3)) ** 2 + (
            (p[1] - self.cavity_y) / (self.cavity_b * scale + 1e-3)
        ) ** 2 <= 1.0

    def paint_cavity(self, p, labels: np.ndarray) -> np.ndarray:
        """Abdomen under the diaphragm; returns the thorax (mediastinum + lungs)."""
        below = p[2] < self.diaphragm_z(p[0], p[1])
        abdomen = self.cavity(p, 1.0) & below
        liver = (
            abdomen
            & (p[0] > self.liver_left_x)
            & (p[2] > self.dome_right - self.liver_depth)
        )
        labels[liver] = Tissue.LIVER
        # Fundus just under the left dome, its gas cap against the diaphragm.
        x, y = self.stomach[0], self.stomach[1]
        centre = self.stomach + [
            0.0,
            0.0,
            self.diaphragm_z(x, y) - self.stomach_r * 0.9,
        ]
        stomach = abdomen & ellipsoid(p, centre, np.full(3, self.stomach_r))
        labels[stomach] = Tissue.SOFT_TISSUE
        labels[stomach & (p[2] > centre[2] + self.stomach_r * 0.4)] = Tissue.AIR
        thorax = self.cavity(p, self.taper(p[2])) & ~below & (p[2] < self.apex_z)
        labels[thorax] = Tissue.FAT  # mediastinal fat until organs are drawn over it
        return thorax

    def heart_masks(self, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heart (myocardium), its blood-filled chambers and the pericardial fat."""
        heart = ellipsoid(p, self.heart_centre, self.heart_semi, self.heart_axes)
        chambers = ellipsoid(
            p, self.heart_centre, self.heart_semi - 11.0, self.heart_axes
        )
        fat = ellipsoid(p, self.heart_centre, self.heart_semi + 5.0, self.heart_axes)
        return heart, chambers, fat

    # -- spine, sternum ---------------------------------------------------

    def spine_centre_y(self, z: np.ndarray | float) -> np.ndarray | float:
        return self.spine_y - self.kyphosis * (1.0 - (z / 250.0) ** 2)

    def spine_masks(self, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bone, discs + spinal canal, lung keep-out around the column)."""
        x, y, z = p
        yc = self.spine_centre_y(z)
        level = np.floor((self.t1_z - z) / self.period + 0.5)
        dz = z - (self.t1_z - level * self.period)  # from this vertebra's centre
        in_body_height = np.abs(dz) < (self.period - self.disc) / 2
        disc_section = (x / self.vert_a) ** 2 + ((y - yc) / self.vert_b) ** 2 <= 1.0
        vertebral_body = disc_section & in_body_height
        canal_y = yc - self.vert_b - 2.0 - self.canal_r
        rho = np.sqrt(x**2 + (y - canal_y) ** 2)
        canal = rho < self.canal_r
        arch = (rho < self.canal_r + self.arch_w) & ~canal & in_body_height
        base_y = canal_y - self.canal_r - self.arch_w + 2.0
        half = self.spinous_len / 2
        # Spinous processes slope down posteriorly, about 0.5 mm per mm.
        dz_spinous = dz + 0.5 * (base_y - y)
        spinous = (
            (x / 4.5) ** 2
            + ((y - (base_y - half)) / half) ** 2
            + (dz_spinous / 7.0) ** 2
        ) <= 1.0
        t_half = self.transverse_len / 2
        transverse = (
            ((np.abs(x) - 12.0 - t_half) / t_half) ** 2
            + ((y - canal_y - 2.0) / 5.5) ** 2
            + ((dz - 2.0) / 6.0) ** 2
        ) <= 1.0
        bone = vertebral_body | arch | spinous | transverse
        soft = (disc_section & ~in_body_height) | canal
        keepout = (x / (self.vert_a + 8.0)) ** 2 + (
            (y - yc) / (self.vert_b + 8.0)
        ) ** 2 <= 1.0
        keepout |= (np.abs(x) < self.vert_a + 8.0) & (y < yc)
        return bone, soft, keepout

    def rib_level_z(self, k: int) -> float:
        return self.t1_z - k * self.period + 2.0

    def sternum_y(self) -> float:
        return self.cavity_y + self.cavity_b + self.muscle / 2

    def sternum_mask(self, p) -> np.ndarray:
        x, y, z = p
        top = self.rib_level_z(0) - self.rib_drop * 0.6
        bottom = self.rib_level_z(6) - self.rib_drop
        half_x = np.where(z > top - 45.0, 24.0, 15.0)  # manubrium is wider
        section = (x / half_x) ** 2 + (
            (y - self.sternum_y()) / (self.muscle * 0.45)
        ) ** 2
        return (section <= 1.0) & (z < top) & (z > bottom)

    # -- tubes: vessels, ribs, cartilage ----------------------------------

    def _draw_vessels(self, rng) -> dict[str, tuple[np.ndarray, float]]:
        c = self.heart_centre
        root = c + [_u(rng, 20, 30), -_u(rng, 5, 15), _u(rng, 30, 40)]
        arch_z = root[2] + _u(rng, 50.0, 70.0)
        ascending_top = np.array(
            [root[0] + _u(rng, 0, 10), root[1] + _u(rng, 0, 10), arch_z]
        )
        r_desc = _u(rng, 10.0, 13.0)
        descending = np.array(
            [
                -(self.vert_a + r_desc + _u(rng, 2, 6)),
                self.spine_y + _u(rng, 0, 10),
                arch_z,
            ]
        )
        t = np.linspace(0.0, 1.0, 9)[:, None]
        bulge = _u(rng, 15.0, 25.0) * np.sin(np.pi * t) * [0.0, 0.0, 1.0]
        arch = ascending_top + t * (descending - ascending_top) + bulge
        pa_start = c + [-_u(rng, 5, 15), _u(rng, 25, 35), _u(rng, 25, 35)]
        fork = pa_start + [-_u(rng, 5, 15), -_u(rng, 25, 35), _u(rng, 15, 25)]
        hilum_y = self.cavity_y + _u(rng, -10.0, 5.0)
        self.hila = {
            "left": np.array([-_u(rng, 55, 65), hilum_y, fork[2] - _u(rng, 0, 10)]),
            "right": np.array([_u(rng, 55, 65), hilum_y, fork[2] - _u(rng, 5, 15)]),
        }
        behind_aorta = np.array([root[0], fork[1] - 10.0, fork[2]])
        carina = np.array(
            [
                _u(rng, -5, 5),
                self.spine_y + self.vert_b + _u(rng, 8, 14),
                fork[2] + _u(rng, 10, 25),
            ]
        )
        svc_x, svc_y = root[0] + _u(rng, 18, 25), root[1] - _u(rng, 0, 8)
        r_pa = _u(rng, 8.0, 10.0)
        vessels = {
            "ascending": (np.stack([root, ascending_top, *arch]), _u(rng, 14.0, 17.0)),
            "descending": (np.stack([descending, descending + [0, 5, -500]]), r_desc),
            "pulmonary_trunk": (np.stack([pa_start, fork]), _u(rng, 12.0, 14.0)),
            "left_pa": (np.stack([fork, self.hila["left"]]), r_pa),
            "right_pa": (np.stack([fork, behind_aorta, self.hila["right"]]), r_pa),
            "svc": (
                np.array([[svc_x, svc_y, 400.0], [svc_x, svc_y, root[2]]]),
                _u(rng, 8, 11),
            ),
        }
        # Trachea down to the carina, main bronchi out to the hila (air).
        self.airways = {
            "trachea": (np.stack([carina + [0, 10, 400], carina]), _u(rng, 7.0, 9.5)),
            "left_bronchus": (np.stack([carina, self.hila["left"] + [8, -12, 8]]), 5.5),
            "right_bronchus": (
                np.stack([carina, self.hila["right"] + [-8, -12, 12]]),
                6.0,
            ),
        }
        return vessels

    def _draw_trees(self, rng) -> list[tuple[np.ndarray, np.ndarray]]:
        trees = []
        for name, sign in (("left", -1.0), ("right", 1.0)):
            trunks = [
                np.array([0.5 * sign, 0.1, 0.85]),  # upper lobe
                np.array([0.95 * sign, 0.25, -0.1]),  # middle / lingula
                np.array([0.45 * sign, -0.35, -0.8]),  # lower lobe, posterior
            ]
            trunks = [d + rng.normal(0.0, 0.15, 3) for d in trunks]
            trees.append(
                vessel_tree(
                    rng,
                    self.hila[name],
                    trunks,
                    depth=6,
                    trunk_length_mm=_u(rng, 30, 40),
                    trunk_radius_mm=_u(rng, 5.5, 7.0),
                )
            )
        return trees

    def _rib_path(
        self, k: int, sign: float, end_deg: float, start_deg: float | None = None
    ):
        """Polyline round the cavity wall; angle 0 = posterior midline, 180 = anterior."""
        z0 = self.rib_level_z(k)
        tip = np.array(
            [
                sign * (12.0 + self.transverse_len),
                self.spine_centre_y(z0) - self.vert_b - self.canal_r,
                z0,
            ]
        )
        sternum_deg = 175.0
        angles = np.deg2rad(np.linspace(start_deg or 20.0, end_deg, 24))
        fraction = (angles - np.deg2rad(20.0)) / np.deg2rad(sternum_deg - 20.0)
        z = z0 - self.rib_drop * fraction
        scale = self.taper(z)
        a = self.cavity_a * scale + self.rib_radius + 1.0
        b = self.cavity_b * scale + self.rib_radius + 1.0
        points = np.stack(
            [sign * a * np.sin(angles), self.cavity_y - b * np.cos(angles), z], axis=1
        )
        return points if start_deg is not None else np.concatenate([tip[None], points])

    def tubes(self) -> list[tuple[np.ndarray, float, int, float]]:
        """(polyline, radius, label, lung clearance) of every tube-like structure."""
        out: list[tuple[np.ndarray, float, int, float]] = [
            (line, r, Tissue.BLOOD, 4.0) for line, r in self.vessels.values()
        ]
        out += [(line, r, Tissue.AIR, 3.0) for line, r in self.airways.values()]
        floating_end = [
            130.0,
            120.0,
            105.0,
            85.0,
            60.0,
        ]  # ribs 8-12 end short of the sternum
        for sign in (-1.0, 1.0):
            for k in range(12):
                end = self.rib_front[k] if k < 7 else floating_end[k - 7]
                out.append(
                    (
                        self._rib_path(k, sign, end),
                        self.rib_radius,
                        Tissue.CORTICAL,
                        0.0,
                    )
                )
                if k < 7:
                    cartilage = self._rib_path(k, sign, 172.0, start_deg=end)
                    out.append((cartilage, self.rib_radius, Tissue.CARTILAGE, 0.0))
        return out


def _cortex_fill(spacing_mm: float) -> float:
    """Fraction of a shell voxel that is cortical bone.

    The shell is whole voxels, at least one, but real cortex is CORTEX_MM
    thick: partial volume keeps the bone's mass right on any grid (a 4 mm
    voxel of pure cortex would weigh a vertebra two to three times over).
    """
    shell_voxels = max(1, int(np.ceil(CORTEX_MM / spacing_mm)))
    return CORTEX_MM / (shell_voxels * spacing_mm)


def _paint_bone(labels: np.ndarray, bone: np.ndarray, spacing_mm: float) -> None:
    """Cortical shell (CORTEX_MM, at least one voxel) over a trabecular core."""
    shell_voxels = max(1, int(np.ceil(CORTEX_MM / spacing_mm)))
    core = ndimage.binary_erosion(bone, iterations=shell_voxels)
    labels[bone] = Tissue.CORTICAL
    labels[core] = Tissue.TRABECULAR


def _vessel_fraction(grid: CubeGrid, frame: PatientFrame, torso: Torso) -> np.ndarray:
    """Fraction of each voxel filled by pulmonary vessels (partial volume)."""
    points = np.concatenate([pts for pts, _ in torso.trees])
    radii = np.concatenate([r for _, r in torso.trees])
    voxel_mm3 = grid.spacing_mm**3
    total = np.zeros((grid.size,) * 3, dtype=np.float32)
    # Blur each calibre by its own radius so thin and thick vessels both keep
    # their volume whatever the voxel size.
    for low, high in ((0.0, 1.5), (1.5, 2.8), (2.8, 99.0)):
        chosen = (radii >= low) & (radii < high)
        if not chosen.any():
            continue
        # Points 1 mm apart in the patient, ``scale`` mm in the scanner.
        volume = np.pi * radii[chosen] ** 2 * frame.scale**3 / voxel_mm3
        sigma = max(0.5, float(radii[chosen].mean()) * frame.scale / grid.spacing_mm)
        total += ndimage.gaussian_filter(
            splat(grid, frame, points[chosen], volume), sigma
        )
    return np.clip(total, 0.0, 1.0)


def _lung_texture(
    rng: np.random.Generator, p, torso: Torso, grid: CubeGrid
) -> np.ndarray:
    """Parenchyma: smooth noise plus the gravity gradient (dependent lung denser)."""
    noise = rng.standard_normal((grid.size,) * 3, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=max(0.7, 3.0 / grid.spacing_mm))
    noise *= 12.0 / (noise.std() + 1e-6)
    gravity = -35.0 * (p[1] - torso.cavity_y) / torso.cavity_b
    return noise + gravity


def _paint_nodules(rng, labels: np.ndarray, hu: np.ndarray, spacing_mm: float) -> None:
    """0-3 spheres (radius 3-12 mm, 30-100 HU) wholly inside the lungs."""
    lung_index = np.flatnonzero(labels == Tissue.LUNG)
    count = int(rng.integers(0, 4))
    if lung_index.size == 0:
        return
    for _ in range(count):
        radius = _u(rng, max(3.0, 0.8 * spacing_mm), 12.0)
        reach = int(np.ceil(radius / spacing_mm)) + 1
        for _attempt in range(30):
            centre = np.array(np.unravel_index(rng.choice(lung_index), labels.shape))
            low, high = centre - reach, centre + reach + 1
            if np.any(low < 0) or np.any(high > labels.shape):
                continue
            box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
            if np.all(labels[box] == Tissue.LUNG):
                offsets = np.indices(labels[box].shape) - reach
                sphere = np.sum(offsets**2, axis=0) * spacing_mm**2 <= radius**2
                labels[box][sphere] = Tissue.NODULE
                hu[box][sphere] = _u(rng, *TISSUE_HU[Tissue.NODULE])
                break
