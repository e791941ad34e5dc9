"""Objects tracked in batches give the masks of objects tracked one at a time."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2 import Sam2Session


def _cells(n_frames=5, h=96, w=112, seed=2):
    """A stack of 24 bright drifting blocks and their label image on frame 0."""
    rng = np.random.default_rng(seed)
    stack = 40 + 30 * rng.random((n_frames, h, w))
    lab = np.zeros((h, w), np.uint16)
    k = 0
    for r in range(4):
        for c in range(6):
            k += 1
            y, x = 4 + r * 23, 4 + c * 18
            lab[y:y + 15, x:x + 12] = 1000 + 7 * k  # arbitrary ids
            for t in range(n_frames):
                stack[t, y + t // 3:y + 15 + t // 3, x:x + 12] += 110
    return np.clip(stack, 0, 255).astype(np.uint8), lab


def _logits(session, frame, obj_id):
    out = session._objects[obj_id].output(frame)
    return out["pred_masks"].float()


def _compare(a, b, results_a, results_b):
    """Batched (a) vs one at a time (b): same frames, same objects, same masks."""
    assert [f for f, _ in results_a] == [f for f, _ in results_b]
    for (frame, ma), (_, mb) in zip(results_a, results_b):
        assert list(ma) == list(mb), f"frame {frame}"
        for obj_id in ma:
            la, lb = _logits(a, frame, obj_id), _logits(b, frame, obj_id)
            torch.testing.assert_close(la, lb, rtol=0, atol=1e-4, msg=f"frame {frame}, object {obj_id}")
            differ = ma[obj_id] != mb[obj_id]
            if differ.any():
                # only a pixel whose logit is 0 up to rounding may land on the other side
                up = F.interpolate(la, size=ma[obj_id].shape, mode="bilinear", align_corners=False)[0, 0]
                assert up.abs().numpy()[differ].max() < 1e-4, f"frame {frame}, object {obj_id}"
                assert differ.sum() <= 3


def _run_both(sessions, *args, **kwargs):
    """Propagate both sessions in lockstep, reading logits before any pruning."""
    out = ([], [])
    for ya, yb in zip(*(s.propagate(*args, **kwargs) for s in sessions)):
        for o, y in zip(out, (ya, yb)):
            o.append(y)
        _compare(*sessions, [ya], [yb])
    return out


def test_batched_tracking_equals_one_at_a_time(tiny_model):
    stack, lab = _cells()
    a = Sam2Session(tiny_model, stack, batch_objects=True, max_batch=16)
    b = Sam2Session(tiny_model, stack, batch_objects=False)
    sizes = []
    decode = a._tracker.adapter._decode_batch

    def counting(pix, *args):
        sizes.append(pix.shape[0])
        return decode(pix, *args)

    a._tracker.adapter._decode_batch = counting
    ids = [s.add_label_image(0, lab) for s in (a, b)][0]
    assert len(ids) == 24
    ra, rb = _run_both((a, b), "forward")
    assert len(ra) == len(stack) and all(len(m) == 24 for _, m in ra)
    assert max(sizes) == 16 and sum(sizes) == 24 * (len(stack) - 1)
    assert any(m.any() for _, masks in ra for m in masks.values())

    # a correction, a removal and an object added mid-stack: memories diverge
    sizes.clear()
    for s in (a, b):
        s.add_points(3, ids[5], [[30, 80]], [0])
        s.remove_object(ids[10])
        s.add_points(4, 77, [[60, 60]], [1])
    _run_both((a, b), "both")
    assert max(sizes) >= 16
    # undo the last change on each (the added object), track again
    for s in (a, b):
        s.undo()
        assert 77 not in s.objects and ids[10] not in s.objects
    _run_both((a, b), "forward", start=2)


def test_max_batch_bounds_groups_and_is_checked(tiny_model):
    stack, lab = _cells(n_frames=3)
    s = Sam2Session(tiny_model, stack, max_batch=5)
    sizes = []
    decode = s._tracker.adapter._decode_batch
    s._tracker.adapter._decode_batch = lambda pix, *a: sizes.append(pix.shape[0]) or decode(pix, *a)
    s.add_label_image(0, lab)
    list(s.propagate("forward"))
    assert sizes and max(sizes) == 5
    from napari_sam2.errors import Sam2InputError

    with pytest.raises(Sam2InputError, match="max_batch"):
        Sam2Session(tiny_model, stack, max_batch=0)


def test_cpu_batches_hold_about_the_same_number_of_feature_tokens(tiny_model):
    """16 objects at 256 px input, 8 at 512, 4 at 1024 and SAM 3's 1008 (bounded to 4..16)."""
    from napari_sam2.testing import make_tiny_model, tiny_sam3_config

    def default(network):
        return Sam2Session(network, np.zeros((2, 32, 32), np.uint8)).max_batch

    assert default(tiny_model) == 16  # 256 px: 16 x 16 feature tokens an object
    assert default(make_tiny_model(image_size=512)) == 8
    assert default(make_tiny_model(image_size=1024)) == 4
    assert default(make_tiny_model(image_size=128)) == 16  # never more than 16
    from transformers import Sam3TrackerVideoModel

    sam3 = Sam3TrackerVideoModel(tiny_sam3_config(image_size=1008)).eval()
    assert default(sam3) == 4  # 72 x 72 tokens: never fewer than 4


def test_cancel_from_another_thread_stops_after_the_current_frame(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    s.add_points(0, 1, [[40, 45]], [1])
    seen = []
    gen = s.propagate("forward")
    for frame, _ in gen:
        seen.append(frame)
        if frame == 2:
            t = threading.Thread(target=s.cancel)
            t.start()
            t.join()
    assert seen == [0, 1, 2]
    assert s.score(2, 1) is not None and s.score(3, 1) is None
    # a new propagation is not affected by the earlier cancel
    assert [f for f, _ in s.propagate("forward", start=3)] == [3, 4, 5, 6, 7]


def test_cancel_while_a_frame_is_computed(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    s.add_points(0, 1, [[40, 45]], [1])
    started = threading.Event()
    step = s._step_frame

    def slow_step(*args):
        started.set()
        return step(*args)

    s._step_frame = slow_step
    frames = []
    worker = threading.Thread(target=lambda: frames.extend(f for f, _ in s.propagate("forward", start=1)))
    worker.start()
    started.wait(timeout=60)
    s.cancel()  # lands while frame 1 (or 2) is being computed
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert 1 <= len(frames) <= 2 and frames == list(range(1, 1 + len(frames)))
