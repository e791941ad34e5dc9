"""Seeding objects for ``napari-sam2 segment``: from a label image, or found by SAM 2 itself.

* ``--seeds LABELS`` reads an instance label image (a Cellpose or StarDist result, labels painted
  in napari or Fiji): a 2-D image seeds one frame (``--seed-frame``, default 0); a stack with one
  label frame per input frame seeds every frame that holds labels. Every label id becomes the
  object with that id in the output (ids are kept as they are, not renumbered).
* ``--auto-seed N`` runs :meth:`~napari_sam2.engine.session.Sam2Session.segment_everything` on
  frame N and seeds what it finds; ``--auto-seed-out FILE.tif`` also writes that label image,
  so it can be reviewed, edited and given back with ``--seeds FILE.tif --seed-frame N``.

Seed files are checked against the input (shape, dtype, values) before the model is loaded, so
mistakes are reported in about a second. Nothing here imports Qt or napari; torch only through
the session.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.errors import ImageReadError, SeedError

__all__ = ["SeedLabels", "load_seeds", "check_auto_seed", "auto_seed", "write_seed_image",
           "check_options", "check_seed_inputs", "seed_session"]

#: Largest label id a session file and the output label image can hold.
_MAX_ID = 2**32 - 1


@dataclass
class SeedLabels:
    """A checked seed label image: which frames it seeds and with which ids.

    Attributes
    ----------
    path : pathlib.Path
    frames : list of int
        Input frames that get seeds (those whose label frame holds a nonzero id).
    ids : list of int
        Every id seeded, ascending.
    """

    path: Path
    frames: list[int]
    ids: list[int]
    _data: Any = field(repr=False, default=None)  # an array-like label stack
    _index: Callable[[int], Any] = field(repr=False, default=lambda frame: frame)  # frame -> _data index
    _close: Callable[[], None] | None = field(repr=False, default=None)

    def frame_labels(self, frame: int) -> np.ndarray:
        """The 2-D labels for one input frame, as an unsigned integer array."""
        return _as_labels(np.asarray(self._data[self._index(frame)]), self.path, frame)

    def apply(self, session) -> list[int]:
        """Seed the session's objects; returns the ids seeded (ascending)."""
        done = set()
        for frame in self.frames:
            done.update(session.add_label_image(frame, self.frame_labels(frame)))
        return sorted(done)

    def close(self) -> None:
        """Close the label file (a memory-mapped TIFF or a zarr store), if one is open."""
        if callable(self._close):
            self._close()


def _as_labels(a: np.ndarray, path: Path, frame) -> np.ndarray:
    """Check values and give integer labels (float files holding whole numbers are accepted)."""
    where = f"--seeds '{path.name}'" + ("" if frame is None else f" (frame {frame})")
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise SeedError(f"{where} holds fractional or NaN values: seeds are a label image of "
                            "integer ids (0 = background); save the labels, not probabilities")
        if a.size and (a.min() < 0 or a.max() > _MAX_ID):
            raise SeedError(f"{where}: label ids must be 0..{_MAX_ID}")
        return a.astype(np.uint32)
    if a.dtype.kind not in "iu":
        raise SeedError(f"{where} holds {a.dtype} values: seeds are a label image of integer ids")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise SeedError(f"{where} holds negative values ({int(a.min())}): label ids are 1 and up, "
                        "0 is background")
    if a.size and int(a.max()) > _MAX_ID:
        raise SeedError(f"{where}: label id {int(a.max())} does not fit a 32-bit label image")
    return a


def load_seeds(path, n_frames: int, frame_shape, seed_frame: int | None = None) -> SeedLabels:
    """Open and check a seed label image against the input's frames.

    Parameters
    ----------
    path : str or pathlib.Path
        A label image readable by :func:`napari_sam2.io.readers.open_stack` (TIFF, zarr, npy,
        PNG): ``(Y, X)`` for one frame or ``(T, Y, X)`` with one label frame per input frame.
    n_frames : int
    frame_shape : (int, int)
    seed_frame : int, optional
        The input frame a 2-D image seeds (default 0); with a stack, seed only this frame.

    Raises
    ------
    SeedError
        If the file does not fit the input, holds no label, or holds values that are not ids.
    """
    from napari_sam2.io.readers import open_stack

    path = Path(path)
    frame_shape = tuple(int(v) for v in frame_shape)
    if not path.exists():
        raise SeedError(f"--seeds '{path}' does not exist")
    try:
        stack = open_stack(path)
    except ImageReadError as err:
        raise SeedError(f"--seeds: {err}") from None
    shape = stack.shape
    if stack.dtype.kind not in "biuf":
        raise SeedError(f"--seeds '{path.name}' holds {stack.dtype} values: "
                        "seeds are a label image of integer ids")
    if "C" in stack.axes and shape[stack.axes.index("C")] > 1:
        raise SeedError(f"--seeds '{path.name}' is a colour image (shape {shape}): seeds are a label image, "
                        "one integer id per pixel (save the labels layer, not a screenshot)")
    # drop axes of length 1 (ImageJ writes TZCYX); what is left is (Y, X) or (T, Y, X)
    keep = [a for a, s in enumerate(shape) if s != 1 or stack.axes[a] in "YX"]
    fixed = tuple(slice(None) if a in keep else 0 for a in range(len(shape)))
    core = tuple(shape[a] for a in keep)
    if seed_frame is not None and not 0 <= seed_frame < n_frames:
        raise SeedError(f"--seed-frame {seed_frame} is out of range: the input has {n_frames} frames "
                        f"(0..{n_frames - 1})")
    if len(core) == 2:
        planes, index = 1, (lambda frame: fixed)
        frames = [0 if seed_frame is None else seed_frame]
    elif len(core) == 3:
        planes = core[0]
        if planes != n_frames:
            raise SeedError(
                f"--seeds '{path.name}' is a stack of {planes} label frames but the input has {n_frames} "
                "frames: give one label frame per input frame, or a 2-D label image with --seed-frame N")
        first = keep[0]

        def index(frame, fixed=fixed, first=first):
            return tuple(frame if a == first else s for a, s in enumerate(fixed))

        frames = list(range(n_frames)) if seed_frame is None else [seed_frame]
    else:
        raise SeedError(f"--seeds '{path.name}' has shape {shape}: seeds are a 2-D label image or a "
                        "(frames, rows, columns) label stack")
    if core[-2:] != frame_shape:
        stack.close()
        raise SeedError(f"--seeds '{path.name}' has frames of {core[-2]}x{core[-1]} pixels but the input's "
                        f"frames are {frame_shape[0]}x{frame_shape[1]}: seeds must be the same size")
    seeds = SeedLabels(path, [], [], stack.data, index, stack.close)
    ids: set[int] = set()
    for frame in frames:  # one read of every frame now: bad values fail before the model loads
        present = np.unique(seeds.frame_labels(frame))
        present = present[present != 0]
        if present.size:
            seeds.frames.append(frame)
            ids.update(int(v) for v in present)
    if not ids:
        stack.close()
        which = f"frame {frames[0]} of " if planes > 1 and len(frames) == 1 else ""
        raise SeedError(f"--seeds: {which}'{path.name}' holds no label (every pixel is 0)")
    seeds.ids = sorted(ids)
    return seeds


def check_auto_seed(frame: int, n_frames: int, out=None, others=()) -> None:
    """Check ``--auto-seed N`` and ``--auto-seed-out`` before anything runs."""
    if not 0 <= frame < n_frames:
        raise SeedError(f"--auto-seed {frame} is out of range: the input has {n_frames} frames "
                        f"(0..{n_frames - 1})")
    if out is None:
        return
    out = Path(out)
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise SeedError(f"--auto-seed-out '{out}': the found labels are written as TIFF; use a .tif name")
    if not out.parent.is_dir():
        raise SeedError(f"--auto-seed-out: the folder '{out.parent}' does not exist")
    for other in others:
        if other is not None and _same(out, Path(other)):
            raise SeedError(f"--auto-seed-out '{out}' is also the input or another output: "
                            "choose another name")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def auto_seed(session, frame: int, *, first_id: int = 1, out=None, geometry=None, **settings) -> list[int]:
    """Find the objects on a frame with SAM 2 and seed them; returns their ids.

    Parameters
    ----------
    session : Sam2Session
    frame : int
    first_id : int
        Ids are ``first_id, first_id + 1, ...`` (above the ids the session already has).
    out : path, optional
        Also write the label image, as seeded (the same ids), for review.
    geometry : FrameGeometry, optional
        Pixel size written to ``out``.
    **settings
        Passed to :meth:`~napari_sam2.engine.session.Sam2Session.segment_everything`.
    """
    labels = session.segment_everything(frame, **settings)
    n = int(labels.max())
    if n and first_id + n - 1 > _MAX_ID:
        raise SeedError(f"--auto-seed: {n} objects from id {first_id} do not fit 32-bit labels")
    if n:
        dtype = np.uint16 if first_id + n - 1 <= np.iinfo(np.uint16).max else np.uint32
        shifted = np.where(labels > 0, labels.astype(np.int64) + (first_id - 1), 0).astype(dtype)
    else:
        shifted = labels
    if out is not None:
        write_seed_image(out, shifted, geometry)
    if not n:
        return []
    return session.add_label_image(frame, shifted)


def write_seed_image(path, labels: np.ndarray, geometry=None) -> Path:
    """Write a 2-D label image as an ImageJ TIFF (uint16, or uint32 OME-compatible TIFF).

    Written to a temporary name and renamed, so an existing file is only replaced by a whole one.
    """
    import tifffile

    path = Path(path)
    kwargs: dict[str, Any] = {}
    if geometry is not None:
        sy, sx = abs(geometry.scale[1]), abs(geometry.scale[2])
        if sy > 0 and sx > 0 and (sy, sx) != (1.0, 1.0):
            kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
    tmp = path.with_name(f".{path.name}.writing")
    try:
        if labels.dtype == np.uint16 or labels.dtype == np.uint8:
            tifffile.imwrite(tmp, labels.astype(np.uint16), imagej=True, metadata={"axes": "YX"},
                             compression="zlib", **kwargs)
        else:  # ImageJ TIFFs stop at 16 bits
            tifffile.imwrite(tmp, labels.astype(np.uint32), compression="zlib", **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- the command line
def check_options(args) -> None:
    """Options that make no sense together (before any file is read)."""
    if args.seed_frame is not None and args.seeds is None:
        raise SeedError("--seed-frame needs --seeds LABELS (the label image it is the frame of)")
    if args.auto_seed_out is not None and args.auto_seed is None:
        raise SeedError("--auto-seed-out needs --auto-seed N (the frame to find objects on)")
    if args.seeds is not None and args.auto_seed is not None:
        raise SeedError("choose --seeds or --auto-seed: to edit what --auto-seed finds, write it with "
                        "--auto-seed-out, edit it, and give it back with --seeds")
    if args.auto_seed_points < 1:
        raise SeedError(f"--auto-seed-points {args.auto_seed_points}: give 1 or more points per side")
    if args.auto_seed_min_area < 0:
        raise SeedError(f"--auto-seed-min-area {args.auto_seed_min_area}: give an area of 0 or more pixels")
    for name in ("auto_seed_iou", "auto_seed_stability"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise SeedError(f"--{name.replace('_', '-')} {value:g}: give a threshold between 0 and 1")


def check_seed_inputs(args, n_frames: int, frame_shape, input_path) -> SeedLabels | None:
    """Check the seed options against the input; returns the opened ``--seeds`` or None."""
    if args.auto_seed is not None:
        check_auto_seed(args.auto_seed, n_frames, args.auto_seed_out,
                        (input_path, args.out, args.stats, args.save_session, args.prompts))
    if args.seeds is None:
        return None
    if _same(Path(args.seeds), Path(args.out)):
        raise SeedError(f"--seeds '{args.seeds}' is also --out: the output would overwrite the seeds; "
                        "choose another --out")
    return load_seeds(args.seeds, n_frames, frame_shape, args.seed_frame)


def seed_session(args, session, seeds: SeedLabels | None, geometry=None, say=print) -> list[int]:
    """Add the objects of ``--seeds`` or ``--auto-seed`` to a session; returns their ids."""
    if seeds is not None:
        again = sorted(set(seeds.ids) & set(session.objects))
        try:
            ids = seeds.apply(session)
        finally:
            seeds.close()
        frames = seeds.frames
        where = f"frame {frames[0]}" if len(frames) == 1 else f"{len(frames)} frames"
        say(f"napari-sam2: seeded {len(ids)} object(s) from {seeds.path.name} on {where}")
        if again:
            say(f"napari-sam2: note: seed ids {_short(again)} are also objects of --prompts: their seed "
                "masks are added to them as prompts")
        return ids
    if args.auto_seed is None:
        return []
    from tqdm import tqdm

    first = max(session.objects, default=0) + 1
    bar = tqdm(desc=f"finding objects on frame {args.auto_seed}", unit="batch", file=sys.stderr,
               dynamic_ncols=True)

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        ids = auto_seed(session, args.auto_seed, first_id=first, out=args.auto_seed_out, geometry=geometry,
                        points_per_side=args.auto_seed_points, min_area=args.auto_seed_min_area,
                        pred_iou_thresh=args.auto_seed_iou, stability_score_thresh=args.auto_seed_stability,
                        progress=progress)
    finally:
        bar.close()
    wrote = f" (labels written to {args.auto_seed_out})" if args.auto_seed_out else ""
    if not ids and not session.objects:
        raise SeedError(f"--auto-seed found no object on frame {args.auto_seed}{wrote}: lower "
                        "--auto-seed-iou, --auto-seed-stability or --auto-seed-min-area, "
                        "or try another frame")
    say(f"napari-sam2: found {len(ids)} object(s) on frame {args.auto_seed}"
        + (f", ids {ids[0]}..{ids[-1]}" if ids else "") + wrote)
    return ids


def _short(ids) -> str:
    return ", ".join(map(str, ids[:8])) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
