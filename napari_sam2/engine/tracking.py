"""SAM 2's steps for a session's objects: prompted frames, batched tracking steps, memories.

:class:`Tracker` runs the network for the objects of one session through
:mod:`napari_sam2.engine.adapter` (the one module that calls transformers' private methods):

* a prompt on one object's frame (:meth:`Tracker.segment_prompt`), refining the frame's
  previous mask for added clicks and conditioned on the memory around it for corrections;
* one frame of a propagation for many objects (:meth:`Tracker.step_frame`): objects whose
  memories SAM 2 reads from the same frames go through memory attention, mask decoder and
  memory encoder in one batch, which gives the masks of tracking them one at a time;
* the memory of a prompted frame is encoded only when another frame is tracked (so that a
  click answers sooner and the clicks that follow on the same frame do not encode it for nothing).

:func:`propagation_plan` says which frames a propagation visits for which objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.engine.objects import MaskBits, ObjectState
from napari_sam2.engine.results import FrameMasks, ObjectScore
from napari_sam2.engine.upsample import BIG_FRAME_PIXELS, positive_by_cells, positive_crop

if TYPE_CHECKING:
    from napari_sam2.engine.adapter import Sam2Adapter
    from napari_sam2.engine.cache import FeatureCache
    from napari_sam2.engine.models import Sam2Model

__all__ = ["Tracker", "PlanStep", "propagation_plan", "default_max_batch", "mask_from_logits",
           "masks_into"]

# SAM 2's predictor clamps re-used mask logits to avoid rare numerical issues.
_PREV_LOGITS_CLAMP = 32.0
# Logit magnitude for a mask known only as a binary record (same scale as SAM 2's mask inputs).
_BINARY_LOGIT = 10.0
# Objects tracked in one batch on a CPU: batches of about this many image-feature tokens (the
# memory attention's queries) ran fastest on 2 cores with 30-50 objects (docs/performance.md:
# 256 px input, 256 tokens an object: 16 a batch best in bfloat16, 4 and 16 alike in float32;
# 512 px: 4, 8 and 16 alike; 1024 px: 4 no slower than 1, 10 slower)
_CPU_BATCH_TOKENS = 8192
_CPU_MAX_BATCH = (4, 16)  # the bounds of a CPU batch
_GPU_MAX_BATCH = 256
# Working memory of one object in a batch, per model-input pixel (memory attention over ~7
# frames of memories, the decoder's candidate masks, the memory encoder's input): ~100 MB at 1024 px
_WORK_BYTES_PER_PIXEL = 96


def default_max_batch(model: Sam2Model) -> int:
    """The most objects in one batch.

    From the free memory on a GPU; on a CPU or an Apple GPU from the image-feature size: 16 at
    256 px input, 8 at 512 px, 4 at 1024 px.
    """
    dev = model.device
    if dev.type != "cuda":
        tokens = max(1, model.mask_size // 4) ** 2  # the image features' side: a quarter of the masks'
        low, high = _CPU_MAX_BATCH
        return int(min(high, max(low, _CPU_BATCH_TOKENS // tokens)))
    free, _ = torch.cuda.mem_get_info(dev)
    per_object = _WORK_BYTES_PER_PIXEL * model.image_size ** 2
    return int(max(1, min(_GPU_MAX_BATCH, 0.5 * free // per_object)))


class PlanStep(NamedTuple):
    """One frame of a propagation."""

    reverse: bool
    frame: int
    obj_ids: list[int]


def propagation_plan(prompted: Mapping[int, Sequence[int]], direction: str, start: int,
                     stop: int) -> list[PlanStep]:
    """The frames a propagation visits, in order, with the objects tracked on each.

    Parameters
    ----------
    prompted : mapping of int to sequence of int
        Each object's prompted frames, sorted, in the order the objects were added.
    direction : {"both", "forward", "backward"}
        See :meth:`~napari_sam2.engine.session.Sam2Session.propagate`.
    start, stop : int
        Only frames ``start <= frame < stop``.
    """
    forward: dict[int, list[int]] = {}
    backward: dict[int, list[int]] = {}
    for obj_id, cond in prompted.items():
        if direction in ("both", "forward") and cond[0] < stop:
            for f in range(max(cond[0], start), stop):
                forward.setdefault(f, []).append(obj_id)
        origin = cond[-1] if direction == "backward" else cond[0]
        if direction in ("both", "backward") and origin >= start:
            first = min(origin, stop - 1)
            if direction == "both" and first == origin:
                first -= 1  # the forward pass already yielded the prompted frame
            for f in range(first, start - 1, -1):
                backward.setdefault(f, []).append(obj_id)
    plan = [PlanStep(False, f, forward[f]) for f in sorted(forward)]
    plan += [PlanStep(True, f, backward[f]) for f in sorted(backward, reverse=True)]
    return plan


def masks_into(logits: list[torch.Tensor], out: torch.Tensor) -> None:
    """Several objects' low-resolution logits -> bool masks written into ``out`` ``(N, H, W)``.

    Bilinear upsampling to the frame's size and a threshold at 0, as SAM 2's predictor; on the
    logits' device, nothing copied to the host. Large frames on the CPU are thresholded cell
    by cell (:func:`~napari_sam2.engine.upsample.positive_by_cells`: only the contour is
    interpolated).
    """
    if out.device.type == "cpu" and out.shape[-2] * out.shape[-1] >= BIG_FRAME_PIXELS:
        done = [positive_by_cells(_host_logits(t), o.numpy()) for t, o in zip(logits, out)]
        for k in [k for k, d in enumerate(done) if not d]:  # noisy logits: every pixel
            _interpolated([logits[k]], out[k:k + 1])
        return
    _interpolated(logits, out)


def _host_logits(t: torch.Tensor) -> np.ndarray:
    """One object's low-resolution logits (on the CPU) as a float32 ``(h, w)`` array."""
    return t.detach().to(torch.float32).reshape(t.shape[-2:]).numpy()


def _interpolated(logits: list[torch.Tensor], out: torch.Tensor) -> None:
    x = torch.cat([t.to(torch.float32).reshape(1, 1, *t.shape[-2:]) for t in logits], dim=0)
    x = F.interpolate(x, size=tuple(out.shape[-2:]), mode="bilinear", align_corners=False)
    torch.gt(x[:, 0], 0, out=out)


def mask_from_logits(low_res_logits: torch.Tensor, frame_shape: tuple[int, int]) -> np.ndarray:
    """Low-resolution mask logits -> bool mask at the frame's size (see :func:`masks_into`)."""
    out = torch.empty((1, *frame_shape), dtype=torch.bool, device=low_res_logits.device)
    masks_into([low_res_logits], out)
    return out[0].cpu().numpy()


_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.bool: np.dtype(np.bool_),
                 torch.uint8: np.dtype(np.uint8)}


class HostCopy:
    """Device tensors gathered into one buffer and copied to the host in one transfer.

    :meth:`reserve` lays out a part (its shape and dtype) and :meth:`allocate` makes the buffer
    on the device; each part is then written in place (:meth:`part`, e.g. as the ``out=`` of an
    operation) and :meth:`fetch` copies the buffer to the host once and returns every part as a
    numpy array viewing the host buffer. Parts with wider items come first, so that each is
    aligned.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._layout: list[tuple[tuple[int, ...], torch.dtype]] = []
        self._offsets: list[int] = []
        self._buffer: torch.Tensor | None = None

    def reserve(self, shape: Sequence[int], dtype: torch.dtype) -> int:
        """Lay out a part (before :meth:`allocate`); returns its index."""
        if self._buffer is not None:
            raise RuntimeError("the buffer is allocated: no more parts")
        self._layout.append((tuple(int(n) for n in shape), dtype))
        return len(self._layout) - 1

    def allocate(self) -> None:
        """Make the device buffer that holds every reserved part."""
        order = sorted(range(len(self._layout)), key=lambda i: -self._layout[i][1].itemsize)
        self._offsets = [0] * len(self._layout)
        size = 0
        for i in order:
            shape, dtype = self._layout[i]
            self._offsets[i] = size
            size += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self._buffer = torch.empty(size, dtype=torch.uint8, device=self.device)

    def part(self, index: int) -> torch.Tensor:
        """The device tensor of a part, to be written in place."""
        assert self._buffer is not None, "allocate() first"
        shape, dtype = self._layout[index]
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return self._buffer[self._offsets[index]:self._offsets[index] + n].view(dtype).view(shape)

    def fetch(self) -> list[np.ndarray]:
        """Copy the buffer to the host (the one transfer) and return every part, in order."""
        assert self._buffer is not None, "allocate() first"
        host = self._buffer.numpy(force=True)
        parts = []
        for (shape, dtype), offset in zip(self._layout, self._offsets):
            np_dtype = _NUMPY_DTYPES[dtype]
            n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            parts.append(host[offset:offset + n].view(np_dtype).reshape(shape))
        return parts


class Tracker:
    """Runs SAM 2 for the objects of one session.

    Call its steps inside ``model.inference()``, under the session's lock.

    Parameters
    ----------
    model : Sam2Model
        The session's model.
    adapter : Sam2Adapter
        Drives ``model.network``.
    frames : sequence of torch.Tensor
        The model inputs of the stack's frames (read when indexed).
    cache : FeatureCache
        The image features, shared by all objects.
    frame_shape : (int, int)
        ``(H, W)`` of the frames and of the masks returned.
    keep_frames, batch_objects, max_batch
        As :class:`~napari_sam2.engine.session.Sam2Session` takes them.
    """

    def __init__(self, model: Sam2Model, adapter: Sam2Adapter, frames: Sequence[torch.Tensor],
                 cache: FeatureCache, frame_shape: tuple[int, int], *, keep_frames: int | None,
                 batch_objects: bool, max_batch: int):
        self.model = model
        self.adapter = adapter
        self.frames = frames
        self.cache = cache
        self.frame_shape = frame_shape
        self.n_frames = len(frames)
        self.keep_frames = keep_frames
        self.batch_objects = batch_objects
        self.max_batch = max_batch
        # one memory positional encoding shared by all stored memories
        self._pos_enc: torch.Tensor | None = None
        # memories whose positional encoding may be the shared one: (output, shared, own, equal)
        self._pos_checks: list[tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def new_object(self, obj_id: int) -> ObjectState:
        """An object with its own inference state (its memory bank), reading the shared features."""
        state = self.adapter.new_state(frames=self.frames, cache=self.cache, frame_shape=self.frame_shape,
                                       device=self.model.device, obj_id=obj_id)
        return ObjectState.create(obj_id, state, self.adapter, self.n_frames)

    # ------------------------------------------------------------------ masks of the results
    def mask(self, obj: ObjectState, frame: int) -> np.ndarray | None:
        """The last mask computed for the object on a frame, or None (see ``Sam2Session.mask``)."""
        if frame in obj.exact_masks:
            return obj.exact_masks[frame].copy()
        out = obj.output(frame)
        if out is not None:
            return self.upsample(out["pred_masks"])
        if frame in obj.binary:
            return self.upsample(self.binary_logits(obj, frame))
        return None

    def mask_window(self, obj: ObjectState, frame: int) -> np.ndarray | tuple | None:
        """The object's mask for composing labels: as :meth:`mask`, or ``(rows, cols, mask)``.

        On a large frame on the CPU only the box the object can occupy is computed
        (:func:`~napari_sam2.engine.upsample.positive_crop`), not a frame-sized mask.
        """
        if frame in obj.exact_masks or not self._masks_by_boxes:
            return self.mask(obj, frame)
        out = obj.output(frame)
        low = out["pred_masks"] if out is not None else (
            self.binary_logits(obj, frame) if frame in obj.binary else None)
        return None if low is None else self._window(low)

    @property
    def _masks_by_boxes(self) -> bool:
        """Large frames on the CPU: masks computed in the box each object's cells allow."""
        h, w = self.frame_shape
        return self.model.device.type == "cpu" and h * w >= BIG_FRAME_PIXELS

    def _window(self, low: torch.Tensor) -> tuple | np.ndarray:
        """``(rows, cols, mask)`` of the box the logits allow, or (noisy logits) the whole mask."""
        crop = positive_crop(_host_logits(low), self.frame_shape)
        return crop if crop is not None else self.upsample(low)

    def upsample(self, low_res_logits: torch.Tensor) -> np.ndarray:
        """Low-resolution mask logits -> bool mask at the frame's size."""
        return mask_from_logits(low_res_logits, self.frame_shape)

    # ------------------------------------------------------------------ prompts
    def segment_prompt(self, obj: ObjectState, frame: int, *, point_inputs: dict | None = None,
                       mask_inputs: torch.Tensor | None = None, refine: bool = False) -> tuple[dict, float]:
        """One prompt on one object's frame: ``(output, predicted IoU)``, for a conditioning frame.

        ``point_inputs`` (clicks or a box, ``{"point_coords", "point_labels"}`` at model size) or
        ``mask_inputs`` (a mask at model size). With ``refine``, clicks refine the frame's
        current mask. Nothing of the object is changed but the put-off memories it encodes.
        """
        prev_logits = self.previous_logits(obj, frame) if refine and point_inputs is not None else None
        # a prompt on a frame the object was tracked on is a correction: it is conditioned on
        # the memory around it and tracked in the same direction, like SAM 2's predictor
        is_init = frame not in obj.frames_done
        reverse = False if is_init else obj.frames_done[frame]["reverse"]
        out, iou = self.infer(obj, frame, is_init=is_init, point_inputs=point_inputs,
                              mask_inputs=None if point_inputs is not None else mask_inputs,
                              reverse=reverse, prev_logits=prev_logits)
        # the frame's memory is read only when another frame is tracked: it is encoded then
        # (see encode_pending), so that a click answers sooner and the clicks that follow on
        # the same frame do not run the memory encoder for nothing
        out["pending_vision"] = self.adapter.vision_features(obj.inference_state, frame)[0][-1]
        return out, iou

    def previous_logits(self, obj: ObjectState, frame: int) -> torch.Tensor | None:
        """The frame's last mask logits (exact, or rebuilt from the one-bit record), clamped."""
        out = obj.output(frame)
        if out is not None:
            logits = out["pred_masks"]
        elif frame in obj.binary:
            logits = self.binary_logits(obj, frame)
        else:
            return None
        return torch.clamp(logits.to(self.model.device), -_PREV_LOGITS_CLAMP, _PREV_LOGITS_CLAMP)

    def infer(self, obj: ObjectState, frame: int, *, is_init: bool, point_inputs: dict | None = None,
              mask_inputs: torch.Tensor | None = None, reverse: bool = False,
              prev_logits: torch.Tensor | None = None) -> tuple[dict, float]:
        """One object on one frame: transformers' ``_run_single_frame_inference``, plus the IoU."""
        out, iou = self._infer(obj, frame, is_init=is_init, point_inputs=point_inputs,
                               mask_inputs=mask_inputs, reverse=reverse, prev_logits=prev_logits)
        self.settle_shared_encodings()
        return out, float(iou)

    def _infer(self, obj: ObjectState, frame: int, *, is_init: bool, point_inputs: dict | None = None,
               mask_inputs: torch.Tensor | None = None, reverse: bool = False,
               prev_logits: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
        """:meth:`infer`, with the IoU left on the device (a 0-d float32 tensor)."""
        ad = self.adapter
        st = obj.inference_state
        if not is_init:
            self.encode_pending(obj)
        feats, pos = ad.vision_features(st, frame)
        high_res = ad.high_res_features(feats)
        if mask_inputs is not None:
            out, iou = ad.mask_as_output(feats, high_res, mask_inputs)
        else:
            pix = ad.condition_on_memory([st], frame, feats, pos, is_init=is_init,
                                         n_frames=self.n_frames, reverse=reverse)
            out, iou = ad.decode(pix, high_res, point_inputs=point_inputs, mask_logits=prev_logits,
                                 is_init=is_init)
        # with several candidate masks SAM 2 returns the one with the best predicted IoU
        return out, iou[0]

    # ------------------------------------------------------------------ memories
    def encode_pending(self, obj: ObjectState) -> None:
        """Encode the memories of the object's prompted frames that were put off (see segment_prompt)."""
        for frame, out in obj.cond.items():
            if "pending_vision" in out:
                self.encode_memories(frame, [(obj, out)], from_prompt=True, vision=out["pending_vision"])
                del out["pending_vision"]

    def encode_pending_batched(self, objs: list[ObjectState]) -> None:
        """Encode the put-off memories of prompted frames (see segment_prompt), a batch per frame."""
        by_frame: dict[int, list] = {}
        for obj in objs:
            for frame, out in obj.cond.items():
                if "pending_vision" in out:
                    by_frame.setdefault(frame, []).append((obj, out))
        for frame, items in by_frame.items():
            for k in range(0, len(items), self.max_batch):
                chunk = items[k:k + self.max_batch]
                self.encode_memories(frame, chunk, from_prompt=True, vision=chunk[0][1]["pending_vision"])
                for _, out in chunk:
                    del out["pending_vision"]

    def encode_memories(self, frame: int, items: list[tuple[ObjectState, dict]], *, from_prompt: bool,
                        vision: torch.Tensor | None = None) -> None:
        """Encode the new masks of several objects on one frame into memory, in one batch."""
        ad = self.adapter
        if not items or ad.num_maskmem == 0:
            return
        if vision is None:
            vision = ad.vision_features(items[0][0].inference_state, frame)[0][-1]
        if len({tuple(out["object_score_logits"].shape) for _, out in items}) > 1:
            # some families (EdgeTAM) shape a mask prompt's scores unlike the decoder's: one by one
            for item in items:
                self.encode_memories(frame, [item], from_prompt=from_prompt, vision=vision)
            return
        high_res = torch.cat([out["high_res_masks"] for _, out in items], dim=0)
        scores = torch.cat([out["object_score_logits"] for _, out in items], dim=0)
        mem, pos = ad.encode_memory(vision, high_res, scores, from_prompt=from_prompt)
        if self.model.memory_dtype is not None:
            mem = mem.to(self.model.memory_dtype)
        dim = ad.memory_batch_dim
        for i, (_, out) in enumerate(items):
            out["maskmem_features"] = mem.narrow(dim, i, 1)
            p = pos.narrow(dim, i, 1)
            # the positional encoding depends only on the feature size: every memory shares one
            # tensor. Whether it equals the shared one is known on the host only, so the answer
            # is read with the frame's results (see settle_shared_encodings)
            shared = self._pos_enc
            if (shared is not None and shared.shape == p.shape and shared.dtype == p.dtype
                    and shared.device == p.device):
                self._pos_checks.append((out, shared, p, torch.eq(shared, p).all()))
            else:
                self._pos_enc = p = p.clone()
            out["maskmem_pos_enc"] = p
            # only the memory encoder reads the full-size masks, and it just did
            del out["high_res_masks"]

    def settle_shared_encodings(self, equal: Sequence[bool] | None = None) -> None:
        """Let the memories encoded since the last call share the one positional encoding.

        ``equal``: whether each waiting encoding equals the shared one, as copied to the host
        with a frame's results; None reads them here (one more transfer).
        """
        checks, self._pos_checks = self._pos_checks, []
        if not checks:
            return
        if equal is None:
            equal = torch.stack([c[3] for c in checks]).tolist()
        for (out, shared, p, _), same in zip(checks, equal):
            if same:
                out["maskmem_pos_enc"] = shared
            else:
                out["maskmem_pos_enc"] = self._pos_enc = p.clone()

    # ------------------------------------------------------------------ propagation
    def step_frame(self, objs: list[ObjectState], frame: int, reverse: bool) -> FrameMasks:
        """Track the objects on one frame (prompted ones give their prompt's mask): their masks.

        Everything the frame's results need from the device (the masks at the frame's size, the
        one-bit records, the scores, see :meth:`settle_shared_encodings`) is gathered there and
        copied to the host at once: one device-to-host transfer per frame.
        """
        todo = [obj for obj in objs if frame not in obj.cond]
        if self.batch_objects:
            self.encode_pending_batched(todo)
        new: dict[int, dict] = {}
        tracked: list[tuple[ObjectState, dict, torch.Tensor]] = []
        by_id = {obj.obj_id: obj for obj in objs}
        for group in self.groups(todo, frame, reverse):
            for obj, out, iou in self.infer_group(group, frame, reverse):
                obj.non_cond[frame] = out
                obj.frames_done[frame] = {"reverse": reverse}
                tracked.append((obj, out, iou))
                new[obj.obj_id] = out
        # the records' device parts, before the memory encoder drops what it alone reads
        records = [(obj, *self._record_tensors(out), iou) for obj, out, iou in tracked]
        items = [(by_id[i], out) for i, out in new.items()]
        step = self.max_batch if self.batch_objects else max(len(items), 1)
        for k in range(0, len(items), step):
            self.encode_memories(frame, items[k:k + step], from_prompt=False)
        for obj, _ in items:
            obj.prune(frame, self.keep_frames)

        # lay out the frame's one transfer: scores, position-encoding checks, records, masks
        upsample = [(o.obj_id, new[o.obj_id]["pred_masks"]) for o in objs if o.obj_id in new]
        upsample += [(o.obj_id, o.cond[frame]["pred_masks"]) for o in objs
                     if o.obj_id not in new and frame not in o.exact_masks]
        side = self.model.mask_size
        h, w = self.frame_shape
        # large frames on the CPU: each mask from the box its cells can occupy (below), in a
        # zeroed array whose untouched pages the system never backs (100 objects at 6000 x
        # 6000 would otherwise hold 3.6 GB per frame)
        by_crops = self._masks_by_boxes
        copy = HostCopy(self.model.device)
        i_scores = copy.reserve((len(records), 2), torch.float32)
        i_checks = copy.reserve((len(self._pos_checks),), torch.bool)
        i_bits = copy.reserve((len(records), side, side), torch.bool)
        i_masks = copy.reserve((0 if by_crops else len(upsample), h, w), torch.bool)
        copy.allocate()
        if records:
            copy.part(i_scores).copy_(torch.stack([torch.stack((p, q)) for _, p, _, q in records]))
            copy.part(i_bits).copy_(torch.stack([low for _, _, low, _ in records]))
        if self._pos_checks:
            copy.part(i_checks).copy_(torch.stack([c[3] for c in self._pos_checks]))
        masks_dev = copy.part(i_masks)
        for k in range(0, len(upsample) if not by_crops else 0, self.max_batch):
            chunk = upsample[k:k + self.max_batch]
            masks_into([x for _, x in chunk], masks_dev[k:k + len(chunk)])
        scores, checks, bits, fetched = copy.fetch()
        boxes: dict[int, tuple] = {}
        masks = [self._mask_from_crop(low, boxes, obj_id) for obj_id, low in upsample] if by_crops \
            else list(fetched)

        self.settle_shared_encodings(checks.tolist())
        for (obj, _, _, _), (presence, iou), low in zip(records, scores, bits):
            obj.quality[frame] = (presence, iou)
            obj.binary[frame] = MaskBits.pack(low)
        mask_of = {obj_id: masks[k] for k, (obj_id, _) in enumerate(upsample)}
        result = FrameMasks()
        for obj in objs:
            exact = obj.exact_masks.get(frame) if obj.obj_id not in new else None
            result[obj.obj_id] = exact.copy() if exact is not None else mask_of[obj.obj_id]
            if exact is None and obj.obj_id in boxes:
                result.boxes[obj.obj_id] = boxes[obj.obj_id]
            q = obj.quality[frame]
            result.scores[obj.obj_id] = ObjectScore(float(q[0]), float(q[1]))
        return result

    def _mask_from_crop(self, low: torch.Tensor, boxes: dict, obj_id: int) -> np.ndarray:
        """A frame-sized mask written only in the box its cells can occupy (noted in ``boxes``)."""
        window = self._window(low)
        if not isinstance(window, tuple):  # noisy logits: every pixel interpolated
            return window
        rows, cols, m = window
        mask = np.zeros(self.frame_shape, bool)
        mask[rows, cols] = m
        boxes[obj_id] = (rows.start, rows.stop, cols.start, cols.stop)
        return mask

    def groups(self, todo: list[ObjectState], frame: int, reverse: bool) -> list[list[ObjectState]]:
        """Objects tracked together on ``frame``: those whose memories SAM 2 reads alike."""
        if not self.batch_objects:
            return [[obj] for obj in todo]
        by_memory: dict[tuple, list[ObjectState]] = {}
        for obj in todo:
            key = self.adapter.memory_signature(obj.inference_state, frame, reverse, self.n_frames)
            by_memory.setdefault(key, []).append(obj)
        n = self.max_batch
        return [g[k:k + n] for g in by_memory.values() for k in range(0, len(g), n)]

    def infer_group(self, group: list[ObjectState], frame: int,
                    reverse: bool) -> list[tuple[ObjectState, dict, torch.Tensor]]:
        """Track a group of objects on one frame: ``[(object, output, iou)]``.

        Each IoU stays on the device (a 0-d float32 tensor).
        """
        if len(group) == 1:
            out, iou = self._infer(group[0], frame, is_init=False, reverse=reverse)
            return [(group[0], out, iou)]
        ad = self.adapter
        feats, pos = ad.vision_features(group[0].inference_state, frame)
        pix = ad.condition_on_memory([obj.inference_state for obj in group], frame, feats, pos,
                                     is_init=False, n_frames=self.n_frames, reverse=reverse)
        out, ious = ad.decode(pix, ad.high_res_features(feats, batch=len(group)))
        return [(obj, {k: v[i:i + 1] for k, v in out.items()}, ious[i]) for i, obj in enumerate(group)]

    # ------------------------------------------------------------------ records
    def record(self, obj: ObjectState, frame: int, out: dict, iou: float) -> None:
        """Keep the frame's scores and a one-bit record of its mask (outlives pruning)."""
        presence, low = self._record_tensors(out)
        copy = HostCopy(low.device)
        i_presence, i_low = copy.reserve((), torch.float32), copy.reserve(low.shape, torch.bool)
        copy.allocate()
        copy.part(i_presence).copy_(presence)
        copy.part(i_low).copy_(low)
        presence_host, low_host = copy.fetch()
        obj.quality[frame] = (presence_host, iou)
        obj.binary[frame] = MaskBits.pack(low_host)

    def _record_tensors(self, out: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What :meth:`record` keeps, on the device: presence (0-d float32) and the low-res mask."""
        presence = torch.sigmoid(out["object_score_logits"].float()).max()
        logits = out["pred_masks"]
        side = self.model.mask_size
        if logits.shape[-2:] != (side, side):  # SAM 3's mask prompts come at a quarter of the input
            logits = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
        return presence, logits[0, 0] > 0

    def binary_logits(self, obj: ObjectState, frame: int) -> torch.Tensor:
        """Mask logits rebuilt from the frame's one-bit record."""
        bits = obj.binary[frame].unpack()[None, None]
        return torch.from_numpy(bits.astype(np.float32) * (2 * _BINARY_LOGIT) - _BINARY_LOGIT)
