"""What a chest CT holds around the thorax, drawn per patient.

Real chest CT collections (LIDC-IDRI, NSCLC, LUNA16) vary far more than the
inside of the chest: the scan starts in the neck and stops in the upper
abdomen at levels that differ between patients; children and large adults,
slim and obese; arms raised over the head (most protocols), down beside the
chest or out of the field; a patient table under the back; breasts; scans
with and without contrast in the blood. A network trained on one body shape
learns that shape, so each of these is a random draw here.

Everything is drawn in the patient frame (mm, x Right, y Anterior, z Superior)
of ``chest.Torso``, whose dimensions place it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ct_pipeline.phantoms.shapes import ellipsoid

if TYPE_CHECKING:
    from ct_pipeline.phantoms.chest import Torso

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]

ARM_POSES = ("raised", "down", "absent")
# Chest CT is taken with the arms raised unless the patient cannot.
ARM_POSE_PROBABILITY = (0.6, 0.25, 0.15)
TABLE_PROBABILITY = 0.8
BREAST_PROBABILITY = 0.4
CONTRAST_PROBABILITY = 0.4
# Longest scan drawn: a chest CT that still leaves air in the 384 mm field.
MAX_SCAN_MM = 350.0


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


class Habitus:
    """One patient's build, pose, scan range, table and contrast.

    Every random number is drawn in ``__init__`` in a fixed order, whatever
    the draws decide, so a seed gives the same patient on any grid.
    """

    def __init__(self, rng: np.random.Generator, torso: Torso) -> None:
        self.scale = _u(rng, 0.85, 1.12)  # small to large adult
        self.yaw_deg = _u(rng, -6.0, 6.0)
        # Scan range: from the neck to the upper abdomen, air beyond; at most
        # MAX_SCAN_MM long in the scanner, centred in the field within 10 mm.
        lowest_dome = min(torso.dome_left, torso.dome_right)
        self.top_z = torso.apex_z + _u(rng, 10.0, 60.0)
        self.bottom_z = max(
            lowest_dome - _u(rng, 40.0, 130.0), self.top_z - MAX_SCAN_MM / self.scale
        )
        middle = self.scale * (self.top_z + self.bottom_z) / 2
        self.shift_mm = rng.uniform([-12.0, -12.0, -10.0], [12.0, 12.0, 10.0])
        self.shift_mm[2] -= middle
        # Neck: above the shoulders the trunk gives way to it.
        self.neck_z = torso.apex_z + _u(rng, 10.0, 35.0)
        self.neck_semi = (_u(rng, 48.0, 65.0), _u(rng, 50.0, 65.0))
        self.neck_y = torso.spine_y + _u(rng, 5.0, 20.0)
        # Arms: upper arm as soft tissue round a humerus.
        self.arms = str(rng.choice(ARM_POSES, p=ARM_POSE_PROBABILITY))
        self.arm_r, self.humerus_r = _u(rng, 36.0, 52.0), _u(rng, 9.0, 13.0)
        self.arm_gap, self.arm_y = _u(rng, 3.0, 30.0), _u(rng, -30.0, 20.0)
        # Table: a curved plate under the back.
        self.table = bool(rng.random() < TABLE_PROBABILITY)
        self.table_gap, self.table_mm = _u(rng, 0.0, 8.0), _u(rng, 8.0, 20.0)
        self.table_curve = _u(rng, 0.0, 1.0 / 1200.0)  # mm of rise per mm^2
        # Breasts on the anterior chest wall.
        self.breasts = bool(rng.random() < BREAST_PROBABILITY)
        self.breast_semi = np.array(
            [_u(rng, 45.0, 70.0), _u(rng, 20.0, 55.0), _u(rng, 40.0, 60.0)]
        )
        self.breast_x = _u(rng, 0.35, 0.5) * torso.half_width
        self.breast_z = torso.heart_centre[2] + _u(rng, -10.0, 40.0)
        # Iodine contrast: blood 150-350 HU instead of 40-55.
        self.contrast = bool(rng.random() < CONTRAST_PROBABILITY)
        self.blood_hu = _u(rng, 150.0, 350.0)
        # Shoulder blades over the back of the upper ribs, collar bones.
        self.scapula_semi = np.array(
            [_u(rng, 40.0, 55.0), _u(rng, 4.0, 7.0), _u(rng, 60.0, 80.0)]
        )
        self.scapula_z = torso.apex_z - _u(rng, 40.0, 70.0)
        self.clavicle_r = _u(rng, 5.5, 8.0)
        self.clavicle_rise = _u(rng, 5.0, 25.0)
        # Upper abdomen: spleen, kidneys and gas in the bowel.
        self.spleen_semi = np.array(
            [_u(rng, 22.0, 32.0), _u(rng, 35.0, 55.0), _u(rng, 40.0, 60.0)]
        )
        self.kidney_z = lowest_dome - _u(rng, 90.0, 130.0)
        self.gas = [
            (
                np.array([_u(rng, -90, 90), _u(rng, 0, 60), _u(rng, -70, -10)]),
                _u(rng, 8.0, 22.0),
            )
            for _ in range(int(rng.integers(2, 9)))
        ]

    # -- outline ----------------------------------------------------------

    def neck_mask(self, p: Coords) -> np.ndarray:
        """(n, n, n) voxels above the shoulders that lie outside the neck."""
        a, b = self.neck_semi
        inside = (p[0] / a) ** 2 + ((p[1] - self.neck_y) / b) ** 2 <= 1.0
        return (p[2] > self.neck_z) & ~inside

    def outside_scan(self, p: Coords) -> np.ndarray:
        """(1, 1, n) slices beyond the scan range."""
        return (p[2] > self.top_z) | (p[2] < self.bottom_z)

    # -- masks of the parts -----------------------------------------------

    def arm_masks(self, p: Coords, torso: Torso) -> tuple[np.ndarray, np.ndarray]:
        """(arm soft tissue, humerus) of both arms; empty when out of the field."""
        shape = np.broadcast_shapes(p[0].shape, p[1].shape, p[2].shape)
        arm, humerus = np.zeros(shape, bool), np.zeros(shape, bool)
        if self.arms == "absent":
            return arm, humerus
        if self.arms == "down":
            x = torso.half_width + self.arm_gap + self.arm_r
            along = p[2] < self.neck_z - 5.0
        else:  # raised: the upper arms rise beside the head from the shoulders
            x = torso.half_width * 0.8
            along = p[2] > torso.apex_z - 30.0
        for sign in (-1.0, 1.0):
            rho2 = (p[0] - sign * x) ** 2 + (p[1] - self.arm_y) ** 2
            arm |= (rho2 <= self.arm_r**2) & along
            humerus |= (rho2 <= self.humerus_r**2) & along
        return arm, humerus

    def table_mask(self, p: Coords, torso: Torso) -> np.ndarray:
        """(n, n, 1) the table plate under the patient's back (empty without one)."""
        top = -torso.half_depth - self.table_gap + self.table_curve * p[0] ** 2
        plate = (p[1] <= top) & (p[1] > top - self.table_mm) & (np.abs(p[0]) < 260.0)
        return plate & self.table

    def breast_masks(self, p: Coords, torso: Torso) -> tuple[np.ndarray, np.ndarray]:
        """(breast, glandular core) on the anterior chest wall."""
        shape = np.broadcast_shapes(p[0].shape, p[1].shape, p[2].shape)
        breast, gland = np.zeros(shape, bool), np.zeros(shape, bool)
        if not self.breasts:
            return breast, gland
        front = torso.half_depth * 0.85
        for sign in (-1.0, 1.0):
            centre = np.array([sign * self.breast_x, front, self.breast_z])
            breast |= ellipsoid(p, centre, self.breast_semi)
            gland |= ellipsoid(p, centre + [0, 5, 0], self.breast_semi * 0.55)
        return breast, gland

    def scapula_mask(self, p: Coords, torso: Torso) -> np.ndarray:
        """Both shoulder blades: thin plates on the back, turned with its curve."""
        mask = np.zeros(np.broadcast_shapes(*(c.shape for c in p)), bool)
        back_y = -torso.half_depth + torso.skin + torso.fat + 0.6 * torso.muscle
        for sign in (-1.0, 1.0):
            turn = np.deg2rad(sign * 28.0)
            axes = np.array(
                [
                    [np.cos(turn), -np.sin(turn), 0.0],
                    [np.sin(turn), np.cos(turn), 0.0],
                    [0.0, 0.0, 1.0],
                ]
            )
            centre = np.array([sign * 0.55 * torso.cavity_a, back_y + 18.0, 0.0])
            centre[2] = self.scapula_z
            mask |= ellipsoid(p, centre, self.scapula_semi, axes)
        return mask

    def clavicles(self, torso: Torso) -> list[tuple[np.ndarray, float]]:
        """(polyline, radius) of the collar bones: manubrium to shoulder, bowed forward."""
        top = torso.rib_level_z(0) - torso.rib_drop * 0.6
        out = []
        for sign in (-1.0, 1.0):
            medial = np.array([sign * 22.0, torso.sternum_y() - 4.0, top + 4.0])
            lateral = np.array(
                [
                    sign * (torso.half_width - 25.0),
                    torso.cavity_y - 15.0,
                    top + self.clavicle_rise,
                ]
            )
            middle = (medial + lateral) / 2 + [0.0, 12.0, 0.0]
            out.append((np.stack([medial, middle, lateral]), self.clavicle_r))
        return out

    def abdomen_masks(self, p: Coords, torso: Torso) -> tuple[np.ndarray, np.ndarray]:
        """(spleen + kidneys, bowel gas), inside the abdominal cavity."""
        below = p[2] < torso.diaphragm_z(p[0], p[1]) - 5.0
        spleen_centre = np.array(
            [
                -(torso.cavity_a - self.spleen_semi[0] - 8.0),
                torso.cavity_y - 0.4 * torso.cavity_b,
                torso.dome_left - self.spleen_semi[2] - 5.0,
            ]
        )
        organs = ellipsoid(p, spleen_centre, self.spleen_semi)
        for sign in (-1.0, 1.0):
            centre = np.array(
                [sign * (torso.vert_a + 40.0), torso.spine_y + 5.0, self.kidney_z]
            )
            organs |= ellipsoid(p, centre, np.array([25.0, 22.0, 50.0]))
        gas = np.zeros_like(organs)
        low = min(torso.dome_left, torso.dome_right) - 60.0
        for centre, radius in self.gas:
            gas |= ellipsoid(p, centre + [0.0, 0.0, low], np.full(3, radius))
        inside = torso.cavity(p, 1.0) & below
        return organs & inside, gas & inside
