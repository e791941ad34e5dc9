"""Synthetic sample data, generated in code: no download, deterministic, small.

Two phantoms that exercise what makes scientific stacks hard for a tracker trained on videos:

* :func:`make_cells_timelapse` -- a fluorescence time-lapse of cells that drift, divide and
  blink, recorded with a 12-bit camera (uint16 values in 0..4095, a dark offset and shot noise).
* :func:`make_organ_volume` -- a CT-like volume (int16 Hounsfield units, anisotropic voxels) with
  an irregular organ, two low-contrast lesions inside it and a bright bone.

Both return the image and its ground-truth labels, so examples, tests and the user guide can seed
SAM 2 with a perfect mask prompt and compare what it tracks. The ``*_sample`` functions are the
napari sample-data contributions (``File > Open Sample > SAM 2``); they return layer data tuples.

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "SyntheticCells",
    "SyntheticVolume",
    "make_cells_timelapse",
    "make_organ_volume",
    "cells_timelapse_sample",
    "organ_volume_sample",
]

#: Largest value of a 12-bit camera.
MAX_12BIT = 4095


@dataclass
class SyntheticCells:
    """A synthetic time-lapse and what is in it.

    Attributes
    ----------
    image : numpy.ndarray, (T, Y, X) uint16
        Camera counts in 0..4095.
    labels : numpy.ndarray, (T, Y, X) uint16
        Ground truth: one id per cell track; daughters of a division get new ids. A blinking cell
        stays labelled while it is dark (it is still there, only hard to see).
    divisions : list of (int, int, int, int)
        ``(frame, parent_id, daughter_id_1, daughter_id_2)``: the daughters appear on ``frame``.
    blinks : list of (int, int, int)
        ``(cell_id, first_dark_frame, last_dark_frame)``.
    """

    image: np.ndarray
    labels: np.ndarray
    divisions: list = field(default_factory=list)
    blinks: list = field(default_factory=list)


@dataclass
class SyntheticVolume:
    """A synthetic CT-like volume.

    Attributes
    ----------
    image : numpy.ndarray, (Z, Y, X) int16
        Hounsfield units: air -1000, soft tissue ~40, organ ~75, lesions ~35, bone ~700.
    labels : numpy.ndarray, (Z, Y, X) uint8
        1 organ (without its lesions), 2 lesions, 3 bone.
    spacing : (float, float, float)
        Voxel size in mm, ``(z, y, x)``: thick slices, as in most clinical CT.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple = (2.5, 0.8, 0.8)


# --------------------------------------------------------------------------- cells
@dataclass
class _Cell:
    id: int
    pos: np.ndarray  # (row, col)
    vel: np.ndarray
    radii: np.ndarray  # (r_major, r_minor)
    angle: float
    brightness: float
    born: int
    died: int | None = None  # first frame it no longer exists
    divide_at: int | None = None
    dark: tuple[int, int] | None = None  # blinking: inclusive frame range


def _paint_ellipse(
    image_row: np.ndarray,
    labels: np.ndarray,
    centre,
    radii,
    angle: float,
    value: float,
    label: int,
    texture: np.ndarray,
):
    """Add a soft-edged ellipse to ``image_row`` and stamp ``label`` inside it, in place."""
    h, w = labels.shape
    r = float(max(radii)) + 3
    r0, r1 = int(max(centre[0] - r, 0)), int(min(centre[0] + r + 1, h))
    c0, c1 = int(max(centre[1] - r, 0)), int(min(centre[1] + r + 1, w))
    if r0 >= r1 or c0 >= c1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1]
    dy, dx = yy - centre[0], xx - centre[1]
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / radii[0]
    v = (-dx * sa + dy * ca) / radii[1]
    rho = np.sqrt(u * u + v * v)
    # a smooth edge (about one pixel wide) instead of a hard step, as an optical system gives
    profile = np.clip((1.15 - rho) / 0.3, 0.0, 1.0)
    image_row[r0:r1, c0:c1] += value * profile * texture[r0:r1, c0:c1]
    inside = rho <= 1.0
    labels[r0:r1, c0:c1][inside] = label


def make_cells_timelapse(
    n_frames: int = 40,
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 12,
    seed: int = 0,
) -> SyntheticCells:
    """A fluorescence time-lapse of moving, dividing and blinking cells (12-bit, uint16).

    Parameters
    ----------
    n_frames : int
        Number of time points.
    shape : (int, int)
        Frame size in pixels.
    n_cells : int
        Cells in the first frame; a third of them divide during the movie (when it is long
        enough) and two blink off for a few frames.
    seed : int
        Random seed: the same arguments always give the same movie.

    Returns
    -------
    SyntheticCells
    """
    if n_frames < 1 or len(shape) != 2 or min(shape) < 16 or n_cells < 1:
        raise ValueError(
            f"need n_frames >= 1, a 2-D shape of at least 16x16 pixels and n_cells >= 1; "
            f"got n_frames={n_frames}, shape={shape}, n_cells={n_cells}"
        )
    rng = np.random.default_rng(seed)
    h, w = shape
    scale = min(h, w) / 256.0  # cell size follows the frame size so small test movies still work
    cells: list[_Cell] = []
    for i in range(n_cells):
        r_major = rng.uniform(9, 14) * scale
        cells.append(
            _Cell(
                id=i + 1,
                pos=np.array([rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w]),
                vel=rng.normal(0, 1.0, 2) * scale,
                radii=np.array([r_major, r_major * rng.uniform(0.65, 0.95)]),
                angle=rng.uniform(0, np.pi),
                brightness=rng.uniform(900, 2600),
                born=0,
            )
        )
    order = rng.permutation(n_cells)
    if n_frames >= 8:
        for j in order[: max(1, n_cells // 3)]:
            cells[j].divide_at = int(rng.integers(n_frames // 4, 3 * n_frames // 4 + 1))
        for j in order[-min(2, n_cells):]:
            start = int(rng.integers(n_frames // 5, max(n_frames // 5 + 1, n_frames - 5)))
            cells[j].dark = (start, min(start + int(rng.integers(2, 5)), n_frames - 1))

    image = np.empty((n_frames, h, w), np.uint16)
    labels = np.zeros((n_frames, h, w), np.uint16)
    divisions, blinks = [], []
    for c in cells:
        if c.dark is not None:
            blinks.append((c.id, c.dark[0], c.dark[1]))
    next_id = n_cells + 1
    # fixed cytoplasm texture, drifting slowly: the same cell looks alike from frame to frame
    texture_seed = rng.normal(0, 1, (h, w))
    for t in range(n_frames):
        # divisions happen before drawing frame t: the daughters are what frame t shows
        for c in list(cells):
            if c.died is None and c.divide_at == t:
                c.died = t
                axis = np.array([np.cos(c.angle), np.sin(c.angle)])[::-1]  # (row, col) of major axis
                for sign in (-1, 1):
                    cells.append(
                        _Cell(
                            id=next_id,
                            pos=c.pos + sign * axis * c.radii[0] * 0.55,
                            vel=c.vel + sign * axis * 1.2 * scale,
                            radii=c.radii / np.sqrt(2) * 1.05,
                            angle=c.angle + rng.normal(0, 0.3),
                            brightness=c.brightness * rng.uniform(0.9, 1.1),
                            born=t,
                        )
                    )
                    next_id += 1
                divisions.append((t, c.id, next_id - 2, next_id - 1))
        frame = np.zeros((h, w), np.float64)
        texture = 1.0 + 0.12 * np.roll(texture_seed, (t // 4, t // 6), axis=(0, 1))
        for c in cells:
            if c.born > t or (c.died is not None and c.died <= t):
                continue
            value = c.brightness
            if c.dark is not None and c.dark[0] <= t <= c.dark[1]:
                value *= 0.08  # blinked off: barely above background, but still there
            _paint_ellipse(frame, labels[t], c.pos, c.radii, c.angle, value, c.id, texture)
        # camera: dark offset, photon shot noise, read noise, 12-bit ADC
        frame = 100.0 + 60.0 * np.exp(-(((np.arange(w) - w / 2) / w) ** 2))[None, :] + frame
        frame = rng.poisson(frame).astype(np.float64) + rng.normal(0, 6.0, (h, w))
        image[t] = np.clip(np.rint(frame), 0, MAX_12BIT).astype(np.uint16)
        # motion for the next frame: persistent random walk, bouncing off the borders
        for c in cells:
            c.vel = 0.8 * c.vel + rng.normal(0, 0.6, 2) * scale
            c.pos = c.pos + c.vel
            c.angle += rng.normal(0, 0.05)
            for k, size in enumerate((h, w)):
                lo, hi = c.radii[0], size - 1 - c.radii[0]
                if c.pos[k] < lo or c.pos[k] > hi:
                    c.pos[k] = np.clip(c.pos[k], lo, hi)
                    c.vel[k] = -c.vel[k]
    return SyntheticCells(image=image, labels=labels, divisions=divisions, blinks=blinks)


# --------------------------------------------------------------------------- volume
def make_organ_volume(shape: tuple[int, int, int] = (48, 128, 128), seed: int = 0) -> SyntheticVolume:
    """A CT-like phantom: body, an irregular organ with two lesions, and a bone.

    Parameters
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)`` voxels. The voxel spacing is ``(2.5, 0.8, 0.8)`` mm whatever the shape, so
        the phantom is anisotropic like a clinical scan.
    seed : int
        Random seed for the organ's shape, the lesion positions and the noise.

    Returns
    -------
    SyntheticVolume
    """
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (Z, Y, X) with at least 8 voxels per axis, got {shape}")
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    spacing = (2.5, 0.8, 0.8)
    # normalised coordinates in [-1, 1] along each axis
    z = np.linspace(-1, 1, nz)[:, None, None]
    y = np.linspace(-1, 1, ny)[None, :, None]
    x = np.linspace(-1, 1, nx)[None, None, :]

    image = np.full(shape, -1000.0)
    labels = np.zeros(shape, np.uint8)
    body = (y / 0.8) ** 2 + (x / 0.92) ** 2 <= 1.0
    body = np.broadcast_to(body, shape)
    image[body] = 40.0

    # organ: an ellipsoid whose radius is modulated by a few low-frequency waves (liver-like)
    cz, cy, cx = rng.uniform(-0.1, 0.1), rng.uniform(-0.2, 0.0), rng.uniform(-0.35, -0.15)
    dz, dy, dx = (z - cz) / 0.7, (y - cy) / 0.45, (x - cx) / 0.45
    rho = np.sqrt(dz**2 + dy**2 + dx**2)
    theta = np.arctan2(dy, dx)
    phi = np.arctan2(dz, np.sqrt(dy**2 + dx**2))
    wobble = 1.0
    for _ in range(4):
        k, m = rng.integers(1, 4), rng.integers(1, 3)
        wobble = wobble + 0.08 * np.sin(k * theta + rng.uniform(0, 2 * np.pi)) * np.cos(
            m * phi + rng.uniform(0, 2 * np.pi)
        )
    organ = rho <= wobble
    image[organ] = 75.0
    labels[organ] = 1

    # two hypodense lesions inside the organ (low contrast: about 40 HU below it)
    voxel = np.array(spacing)
    organ_idx = np.argwhere(organ)
    for radius_mm in (9.0, 6.0):
        for _ in range(100):
            centre = organ_idx[rng.integers(len(organ_idx))]
            zz = (np.arange(nz)[:, None, None] - centre[0]) * voxel[0]
            yy = (np.arange(ny)[None, :, None] - centre[1]) * voxel[1]
            xx = (np.arange(nx)[None, None, :] - centre[2]) * voxel[2]
            lesion = zz**2 + yy**2 + xx**2 <= radius_mm**2
            if (organ[lesion]).mean() > 0.98:  # fully inside the organ
                break
        image[lesion] = 35.0
        labels[lesion] = 2

    # bone: a vertebra-like cylinder along z, behind the organ
    bone = ((y - 0.5) / 0.12) ** 2 + (x / 0.12) ** 2 <= 1.0
    bone = np.broadcast_to(bone, shape)
    image[bone] = 700.0
    labels[bone] = 3

    image += rng.normal(0, 12.0, shape) * body
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    return SyntheticVolume(image=image, labels=labels, spacing=spacing)


# --------------------------------------------------------------------------- napari samples
def cells_timelapse_sample():
    """napari sample: the cell time-lapse and its ground truth (hidden)."""
    cells = make_cells_timelapse()
    return [
        (
            cells.image,
            {
                "name": "cells (12-bit)",
                "contrast_limits": [float(cells.image.min()), float(np.percentile(cells.image, 99.8))],
                "colormap": "gray",
                "axis_labels": ("t", "y", "x"),
                "metadata": {"divisions": cells.divisions, "blinks": cells.blinks},
            },
            "image",
        ),
        (cells.labels, {"name": "cells ground truth", "visible": False, "axis_labels": ("t", "y", "x")},
         "labels"),
    ]


def organ_volume_sample():
    """napari sample: the CT-like volume (soft-tissue window) and its ground truth (hidden)."""
    vol = make_organ_volume()
    return [
        (
            vol.image,
            {
                "name": "CT phantom (HU)",
                "scale": vol.spacing,
                # the usual abdominal soft-tissue window: centre 40 HU, width 350 HU
                "contrast_limits": [-135.0, 215.0],
                "colormap": "gray",
                "axis_labels": ("z", "y", "x"),
                "units": ("mm", "mm", "mm"),
            },
            "image",
        ),
        (
            vol.labels,
            {"name": "CT phantom ground truth", "scale": vol.spacing, "visible": False,
             "axis_labels": ("z", "y", "x"), "units": ("mm", "mm", "mm")},
            "labels",
        ),
    ]
