"""Find every object on one frame: SAM 2's automatic mask generation, as a label image.

This follows Meta's ``SAM2AutomaticMaskGenerator`` (``sam2/automatic_mask_generator.py``):

1. a regular grid of single positive points covers the frame; each point asks SAM 2's prompt
   encoder and mask decoder for three candidate masks, many points per decoder call, on the
   frame's image features (computed once and shared with tracking through the session's
   feature cache);
2. candidates are kept when the decoder's predicted IoU is above ``pred_iou_thresh`` and their
   *stability score* (IoU of the mask thresholded at ``+offset`` and at ``-offset`` logits) is
   at least ``stability_score_thresh``;
3. duplicates are removed by non-maximum suppression on their bounding boxes;
4. holes and islands smaller than ``min_area`` pixels are removed from each mask;
5. optionally (``crop_n_layers``) the same runs on overlapping crops of the frame, each crop
   encoded on its own at the model's resolution, which finds small objects on large frames.

Meta's generator returns overlapping masks; a label image cannot hold them, so
:func:`labels_from_masks` paints them from the largest to the smallest (a small object inside a
large one stays whole and visible, the large one keeps the rest) and drops what ends up smaller
than ``min_area``. The result is a non-overlapping label image ready for review, editing and
:meth:`~napari_sam2.engine.session.Sam2Session.add_label_image`.

Only public modules of transformers' ``Sam2VideoModel`` are called (``prompt_encoder``,
``mask_decoder``, ``get_image_features``, ``get_image_wide_positional_embeddings``); no
tracking state is read or written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.frames import IMAGENET_MEAN, IMAGENET_STD
from napari_sam2.errors import Sam2InputError

__all__ = [
    "AutoMaskSettings",
    "FoundMask",
    "frame_features",
    "generate_masks",
    "decode_points",
    "labels_from_masks",
    "box_nms",
    "stability_scores",
    "remove_small_regions",
    "point_grid",
    "crop_boxes",
]

# Upsampled candidate masks are handled this many at a time (at 1024 x 1024 pixels, 64 MB).
_UPSAMPLE_CHUNK = 16
# Meta's tolerance (pixels) for "this box touches the crop's edge" (a cut-off object).
_EDGE_TOLERANCE = 20.0
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity, as Meta's OpenCV connected components


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class AutoMaskSettings:
    """How :func:`generate_masks` searches a frame.

    Meta's generator options, with the same defaults except ``stability_score_thresh`` 0.9 and
    ``min_area`` 64.

    Attributes
    ----------
    points_per_side : int
        The point grid is ``points_per_side`` x ``points_per_side`` over the frame (1,024 points
        at 32). More points find smaller objects and cost proportionally more decoder time.
    points_per_batch : int
        Points run through the mask decoder at once (memory grows with it).
    pred_iou_thresh : float
        Keep masks whose predicted IoU is above this (0..1).
    stability_score_thresh : float
        Keep masks whose stability score is at least this (0..1).
    stability_score_offset : float
        Logit offset of the stability score.
    box_nms_thresh : float
        Box IoU above which the lower-scored of two masks is dropped as a duplicate.
    min_area : int
        Holes and islands smaller than this (pixels) are removed from every mask, and objects
        left smaller than this in the label image are dropped. 0 keeps everything.
    max_area : int or None
        Masks larger than this (pixels) are dropped, e.g. the background found as an object.
    crop_n_layers : int
        0: the whole frame only. ``n``: also ``4, 16, ... 4**n`` overlapping crops, each
        encoded on its own (one image-encoder run per crop), for small objects on large frames.
    crop_overlap_ratio : float
        Overlap of neighbouring crops, as a fraction of the frame's short side (first layer).
    crop_n_points_downscale_factor : int
        The point grid of crop layer ``k`` has ``points_per_side / factor**k`` points per side.
    crop_nms_thresh : float
        Box IoU for removing duplicates between crops (masks from smaller crops win).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.9
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area: int = 64
    max_area: int | None = None
    crop_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    crop_nms_thresh: float = 0.7

    def __post_init__(self):
        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise Sam2InputError(f"{name} must be an integer >= {low}, got {v!r}")

        def fraction(name, high_open=False):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
                and math.isfinite(v) and 0 <= v and (v < 1 if high_open else v <= 1)
            if not ok:
                bound = "1)" if high_open else "1]"
                raise Sam2InputError(f"{name} must be a number in [0, {bound}, got {v!r}")

        integer("points_per_side", 1)
        integer("points_per_batch", 1)
        integer("min_area", 0)
        integer("crop_n_layers", 0)
        integer("crop_n_points_downscale_factor", 1)
        if self.max_area is not None:
            integer("max_area", 1)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            fraction(name)
        fraction("crop_overlap_ratio", high_open=True)
        off = self.stability_score_offset
        if isinstance(off, bool) or not isinstance(off, (int, float)) or not math.isfinite(off) or off < 0:
            raise Sam2InputError(f"stability_score_offset must be a number >= 0, got {off!r}")

    @classmethod
    def from_options(cls, **options) -> AutoMaskSettings:
        """Build from keyword options; an unknown name raises :class:`~napari_sam2.errors.Sam2InputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise Sam2InputError(
                f"unknown option {unknown[0]!r} for segment_everything (options: {', '.join(sorted(known))})"
            )
        return cls(**options)


@dataclass
class FoundMask:
    """One object found on a frame.

    Attributes
    ----------
    bbox : (int, int, int, int)
        ``(row0, col0, row1, col1)`` in frame pixels, end exclusive: ``mask`` covers
        ``frame[row0:row1, col0:col1]``.
    mask : numpy.ndarray
        bool, the object inside ``bbox``.
    predicted_iou : float
        The mask decoder's estimate of the mask's quality.
    stability : float
        The stability score.
    crop : (int, int, int, int)
        The frame region whose grid point produced it (the whole frame without crop layers).
    """

    bbox: tuple[int, int, int, int]
    mask: np.ndarray
    predicted_iou: float
    stability: float
    crop: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(self.mask.sum())

    def full(self, frame_shape) -> np.ndarray:
        """The mask as a bool array of the frame's shape."""
        out = np.zeros(tuple(frame_shape), bool)
        r0, c0, r1, c1 = self.bbox
        out[r0:r1, c0:c1] = self.mask
        return out


# --------------------------------------------------------------------------- small pieces
def point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` points ``(x, y)`` in [0, 1], cell centres of an n x n grid (Meta's order)."""
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(frame_shape, n_layers: int,
               overlap_ratio: float) -> list[tuple[tuple[int, int, int, int], int]]:
    """The whole frame, then ``4**k`` overlapping crops for layers ``k = 1..n_layers``.

    Returns ``[((row0, col0, row1, col1), layer), ...]`` (Meta's ``generate_crop_boxes``).
    """
    h, w = (int(v) for v in frame_shape)
    boxes = [((0, 0, h, w), 0)]
    short = min(h, w)

    def length(orig, n, overlap):
        return math.ceil((overlap * (n - 1) + orig) / n)

    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short * (2 / n))
        ch, cw = length(h, n, overlap), length(w, n, overlap)
        for c0, r0 in product([int((cw - overlap) * i) for i in range(n)],
                              [int((ch - overlap) * i) for i in range(n)]):
            boxes.append(((r0, c0, min(r0 + ch, h), min(c0 + cw, w)), layer))
    return boxes


def stability_scores(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of the masks ``logits > threshold + offset`` and ``logits > threshold - offset``.

    ``logits`` is ``(..., H, W)``; returns float32 ``(...)``. A mask empty at both thresholds
    scores 0.
    """
    lead = logits.shape[:-2]
    if logits.device.type == "cpu":
        # numpy counts set booleans several times faster than torch sums them on a CPU
        a = logits.detach().float().contiguous().numpy().reshape(*lead, -1)
        inter = np.count_nonzero(a > threshold + offset, axis=-1)
        union = np.count_nonzero(a > threshold - offset, axis=-1)
        score = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        return torch.from_numpy(np.asarray(score, np.float32).reshape(lead))
    inter = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int64)
    union = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int64)
    return torch.where(union > 0, inter.double() / union.clamp(min=1).double(), 0.0).float()


def box_nms(boxes, scores, iou_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns the indices kept, best score first.

    Parameters
    ----------
    boxes : array-like (N, 4)
        ``(row0, col0, row1, col1)``, end exclusive.
    scores : array-like (N,)
    iou_thresh : float
        A box overlapping a kept, better-scored box by more than this IoU is dropped.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    b = b[order]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    alive = np.ones(len(b), bool)
    keep = []
    for i in range(len(b)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.nonzero(alive[i + 1:])[0] + i + 1
        if not len(rest):
            break
        ih = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        iw = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = ih * iw
        union = area[i] + area[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        alive[rest[iou > iou_thresh]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fill holes and remove islands smaller than ``min_area`` pixels (8-connected).

    Background touching the array's edge is never a hole. When every island is small, the
    largest is kept. Returns ``(mask, changed)``.
    """
    from scipy import ndimage as ndi

    m = np.pad(np.asarray(mask, bool), 1)
    changed = False
    bg, n_bg = ndi.label(~m, structure=_EIGHT)
    if n_bg:
        sizes = np.bincount(bg.ravel(), minlength=n_bg + 1)
        hole = sizes < min_area
        hole[0] = False
        edge = np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])
        hole[edge] = False
        if hole.any():
            m = m | hole[bg]
            changed = True
    fg, n_fg = ndi.label(m, structure=_EIGHT)
    if n_fg > 1 or n_fg == 1 and m.sum() < min_area:
        sizes = np.bincount(fg.ravel(), minlength=n_fg + 1)
        sizes[0] = 0
        keep = sizes >= min_area
        keep[0] = False
        if not keep.any():
            keep[int(np.argmax(sizes))] = True
        if not keep[1:].all():
            m = keep[fg]
            changed = True
    return m[1:-1, 1:-1], changed


def _tight(mask: np.ndarray, origin: tuple[int, int]):
    """Crop a bool mask to its content: ``(bbox, cropped)``, or None when it is empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return (origin[0] + int(r0), origin[1] + int(c0), origin[0] + int(r1), origin[1] + int(c1)), \
        np.ascontiguousarray(mask[r0:r1, c0:c1])


# --------------------------------------------------------------------------- features
def frame_features(model, cache, frames, frame: int) -> list[torch.Tensor]:
    """The frame's image features from the session's cache, running the encoder on a miss.

    Uses the cache entries transformers' ``Sam2VideoModel`` writes and reads during tracking
    (``vision_feats``, ``vision_pos_embeds``), so tracking and automatic masks share one
    encoder run per frame. Call inside ``model.inference()``.
    """
    feats = cache.get_vision_features(frame)
    if feats is None:
        out = model.network.get_image_features(frames[frame].unsqueeze(0), return_dict=True)
        feats = {"vision_feats": out.fpn_hidden_states, "vision_pos_embeds": out.fpn_position_encoding}
        cache.cache_vision_features(frame, feats)
    return list(feats["vision_feats"])


def _encode_crop(model, image: np.ndarray, crop) -> list[torch.Tensor]:
    """Image features of a crop of a contrast-mapped frame (as ``FrameSource.model_input``)."""
    r0, c0, r1, c1 = crop
    s = model.image_size
    x = torch.from_numpy(np.ascontiguousarray(image[r0:r1, c0:c1])).permute(2, 0, 1)[None]
    x = x.to(model.device, torch.float32)
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return list(model.network.get_image_features((x - mean) / std, return_dict=True).fpn_hidden_states)


# --------------------------------------------------------------------------- generation
def generate_masks(model, features, frame_shape, settings: AutoMaskSettings | None = None, *,
                   image: np.ndarray | None = None, progress=None) -> list[FoundMask]:
    """All masks SAM 2 finds on one frame, filtered and de-duplicated (they may overlap).

    Parameters
    ----------
    model : Sam2Model
    features : list of torch.Tensor
        The frame's image features (:func:`frame_features`).
    frame_shape : (int, int)
    settings : AutoMaskSettings, optional
    image : numpy.ndarray, optional
        The contrast-mapped frame, float ``(H, W, 3)`` in [0, 1]; needed only with crop layers.
    progress : callable(done, total), optional
        Called after every decoder batch; raise from it to cancel.

    Call inside ``model.inference()``.
    """
    st = settings or AutoMaskSettings()
    h, w = (int(v) for v in frame_shape)
    crops = crop_boxes((h, w), st.crop_n_layers, st.crop_overlap_ratio)
    if st.crop_n_layers and image is None:
        raise Sam2InputError("crop layers need the frame's image: pass image=")
    grids = [point_grid(max(1, int(st.points_per_side / st.crop_n_points_downscale_factor ** k)))
             for k in range(st.crop_n_layers + 1)]
    total = sum(math.ceil(len(grids[layer]) / st.points_per_batch) for _, layer in crops)
    done = [0]

    def step():
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    found: list[FoundMask] = []
    for crop, layer in crops:
        if layer == 0:
            feats = features
        else:
            assert image is not None  # checked above: crop layers need the image
            feats = _encode_crop(model, image, crop)
        found_crop = _masks_in_crop(model, feats, crop, (h, w), grids[layer], st, step)
        keep = box_nms([m.bbox for m in found_crop], [m.predicted_iou for m in found_crop], st.box_nms_thresh)
        found.extend(found_crop[i] for i in keep)
    if len(crops) > 1 and found:
        # duplicates between crops: the mask from the smaller crop wins (it saw more detail)
        crop_area = [(m.crop[2] - m.crop[0]) * (m.crop[3] - m.crop[1]) for m in found]
        keep = box_nms([m.bbox for m in found], 1.0 / np.asarray(crop_area, float), st.crop_nms_thresh)
        found = [found[i] for i in keep]
    if st.min_area > 0 and found:
        found = _clean_small_regions(found, st)
    if st.max_area is not None:
        found = [m for m in found if m.area <= st.max_area]
    return found


def _embeddings(net, feats):
    """Cached (flattened) features -> the decoder's image embeddings, as on a frame without memory."""
    sizes = net.backbone_feature_sizes
    emb = [x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *sz) for x, sz in zip(feats, sizes)]
    # SAM 2 marks a frame seen on its own (no memory bank) with the no-memory embedding
    emb[-1] = emb[-1] + net.no_memory_embedding.view(1, -1, 1, 1).to(emb[-1].dtype)
    return emb


def decode_points(model, features, points_xy, embeddings=None):
    """Three candidate masks per single positive point, all points in one decoder call.

    Parameters
    ----------
    model : Sam2Model
    features : list of torch.Tensor
        The frame's (or crop's) image features (:func:`frame_features`).
    points_xy : array-like (P, 2)
        ``(x, y)`` in model pixels (0..image_size).
    embeddings : list of torch.Tensor, optional
        Reused from an earlier call on the same features.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Low-resolution mask logits ``(P, 3, S/4, S/4)`` and predicted IoUs ``(P, 3)``, the
        same as SAM 2 gives for one click on a frame without memory.
    """
    net = model.network
    dev = model.device
    emb = _embeddings(net, features) if embeddings is None else embeddings
    pts = torch.as_tensor(np.asarray(points_xy, np.float32), device=dev).reshape(1, -1, 1, 2)
    n = pts.shape[1]
    sparse, dense = net.prompt_encoder(
        input_points=pts, input_labels=torch.ones(1, n, 1, dtype=torch.int32, device=dev),
        input_boxes=None, input_masks=None,
    )
    low, iou, _, _ = net.mask_decoder(
        image_embeddings=emb[-1], image_positional_embeddings=net.get_image_wide_positional_embeddings(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=True, high_resolution_features=emb[:-1],
    )
    return low[0], iou[0]


def _masks_in_crop(model, feats, crop, frame_shape, grid, st: AutoMaskSettings, step) -> list[FoundMask]:
    r0, c0, r1, c1 = crop
    ch, cw = r1 - r0, c1 - c0
    emb = _embeddings(model.network, feats)
    whole = crop == (0, 0, frame_shape[0], frame_shape[1])
    found = []
    s = model.image_size
    for start in range(0, len(grid), st.points_per_batch):
        low, iou = decode_points(model, feats, grid[start:start + st.points_per_batch] * s, emb)
        low = low.reshape(-1, *low.shape[-2:])
        iou = iou.reshape(-1).float()
        keep = torch.nonzero(iou > st.pred_iou_thresh).flatten()
        for k in range(0, len(keep), _UPSAMPLE_CHUNK):
            idx = keep[k:k + _UPSAMPLE_CHUNK]
            up = F.interpolate(low[idx, None].float(), size=(ch, cw), mode="bilinear",
                               align_corners=False)[:, 0]
            stab = stability_scores(up, 0.0, st.stability_score_offset)
            good = torch.nonzero(stab >= st.stability_score_thresh).flatten()
            if not len(good):
                continue
            binary = (up[good] > 0).cpu().numpy()
            for j, m in zip(good.tolist(), binary):
                tight = _tight(m, (r0, c0))
                if tight is None:
                    continue
                bbox, cropped = tight
                if not whole and _cut_by_crop(bbox, crop, frame_shape):
                    continue
                found.append(FoundMask(bbox, cropped, float(iou[idx[j]]), float(stab[j]), crop))
        step()
    return found


def _cut_by_crop(bbox, crop, frame_shape) -> bool:
    """Whether a mask touches an edge of its crop that is not an edge of the frame."""
    b = np.asarray(bbox, float)
    c = np.asarray(crop, float)
    f = np.asarray((0, 0, *frame_shape), float)
    near_crop = np.abs(b - c) <= _EDGE_TOLERANCE
    near_frame = np.abs(b - f) <= _EDGE_TOLERANCE
    return bool(np.any(near_crop & ~near_frame))


def _clean_small_regions(found: list[FoundMask], st: AutoMaskSettings) -> list[FoundMask]:
    cleaned, scores = [], []
    for m in found:
        mask, changed = remove_small_regions(m.mask, st.min_area)
        tight = _tight(mask, m.bbox[:2])
        if tight is None:
            continue
        m = FoundMask(tight[0], tight[1], m.predicted_iou, m.stability, m.crop)
        cleaned.append(m)
        # as Meta: masks that needed no cleaning are preferred over cleaned ones
        scores.append((0.0 if changed else 2.0) + m.predicted_iou)
    if not cleaned:
        return []
    keep = box_nms([m.bbox for m in cleaned], scores, st.box_nms_thresh)
    return [cleaned[i] for i in keep]


# --------------------------------------------------------------------------- label image
def labels_from_masks(masks: list[FoundMask], frame_shape, min_area: int = 0) -> np.ndarray:
    """Paint possibly overlapping masks into one label image without overlaps.

    Masks are painted from the largest to the smallest, so a small object lying on a larger one
    stays whole and the larger one keeps the rest. Pieces of an object cut off by others and
    smaller than ``min_area`` pixels are removed, as are objects left smaller than that. Labels
    are numbered ``1..n`` in raster order (top to bottom, then left to right, of each object's
    first pixel).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint16 (uint32 beyond 65,535 objects), 0 for background.
    """
    from scipy import ndimage as ndi

    h, w = (int(v) for v in frame_shape)
    order = sorted(range(len(masks)), key=lambda i: (-masks[i].area, masks[i].predicted_iou))
    work = np.zeros((h, w), np.int64)
    for k, i in enumerate(order, start=1):
        r0, c0, r1, c1 = masks[i].bbox
        work[r0:r1, c0:c1][masks[i].mask] = k
    if min_area > 1:
        for k, sl in enumerate(ndi.find_objects(work), start=1):
            if sl is None:
                continue
            region = work[sl]
            own = region == k
            comp, n = ndi.label(own, structure=_EIGHT)
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            small = sizes < min_area
            small[0] = False
            if small.any():
                region[small[comp] & own] = 0
    ids, first = np.unique(work, return_index=True)
    ids, first = ids[ids > 0], first[ids > 0]
    lut = np.zeros(len(order) + 1, np.int64)
    lut[ids[np.argsort(first, kind="stable")]] = np.arange(1, len(ids) + 1)
    dtype = np.uint16 if len(ids) <= np.iinfo(np.uint16).max else np.uint32
    return lut[work].astype(dtype)
