"""Mixed precision: bfloat16 and float16 autocast give the masks of float32, for every family.

Up to one difference autocast makes by design: a click's candidate masks are picked by predicted
IoUs computed in the lower precision, so candidates whose float32 predictions differ by less
than its rounding step tie, and the first of them is picked (see test_autocast_matches_float32).

On the CPU, autocast runs the same code paths as on a GPU (the dtype casts, the bfloat16 memory
features SAM 2 stores, the float16/bfloat16 mix that autocast refuses), so the comparison runs in
CI; on a GPU only the speed differs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam2 import Sam2Session, load_model
from napari_sam2.engine.tracking import mask_from_logits
from napari_sam2.errors import ModelLoadError
from napari_sam2.testing import make_tiny_model


def _stack(n=6, h=64, w=80, seed=2):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        disc = ((yy - 28 - i) ** 2 + (xx - 30 - 2 * i) ** 2) < 12 ** 2
        frames.append(30 * rng.random((h, w)) + 180 * disc)
    return np.stack(frames).astype(np.uint8)


def _run(model, stack):
    """Masks of a click on frame 2 and of its propagation, the scores, and the click's candidates.

    The candidates: the mask decoder's low-resolution candidate masks ``(3, h, w)`` and their
    predicted IoUs ``(3,)`` for the click (a single click asks for several candidates).
    """
    decoded = []
    hook = model.network.mask_decoder.register_forward_hook(
        lambda module, args, out: decoded.append((out[0].float(), out[1].float())))
    try:
        session = Sam2Session(model, stack)
        click = session.add_points(2, 1, [[28, 32]], [1])
    finally:
        hook.remove()
    masks = {f: m[1] for f, m in session.propagate("both")}
    masks["click"] = click
    quality = session.quality(1)
    low, iou = decoded[0]
    return masks, quality, (low[0, 0], iou[0, 0]), session.frame_shape


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


@pytest.mark.parametrize("family", ["sam2", "sam3", "edgetam"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_matches_float32(family, dtype):
    net = make_tiny_model(family=family, seed=0)
    stack = _stack()
    reference, ref_quality, (ref_low, ref_iou), shape = _run(load_model(net, device="cpu"), stack)
    model = load_model(net, device="cpu", dtype=dtype)
    assert model.autocast_dtype == getattr(torch, dtype)
    masks, quality, (_, iou), _ = _run(model, stack)
    picked, best = int(iou.argmax()), int(ref_iou.argmax())
    if picked != best:
        # The click's candidate masks are picked by their predicted IoU, which autocast computes
        # in its own precision: predictions closer than its rounding step become equal and the
        # first of them is picked. (The random tiny EdgeTAM predicts 0.50660 and 0.50673 for two
        # candidates: one value in bfloat16 and in float16.) The mask must then be that
        # candidate's float32 mask.
        step = torch.finfo(getattr(torch, dtype)).eps * float(ref_iou[best])
        assert float(ref_iou[best] - ref_iou[picked]) <= step, (ref_iou, iou)
        reference["click"] = reference[2] = mask_from_logits(ref_low[picked], shape)
    assert set(masks) == set(reference)
    assert sum(m.sum() for m in reference.values()) > 0, "empty masks compare nothing"
    ious = [_iou(masks[k], reference[k]) for k in reference]
    assert min(ious) > 0.95, f"{dtype} vs float32 IoU per frame: {np.round(ious, 3)}"
    assert np.mean(ious) > 0.98
    assert np.isfinite(quality).all()
    np.testing.assert_allclose(quality[:, 0], ref_quality[:, 0], atol=0.05)  # presence


def test_float16_memories_are_stored_in_float16():
    """SAM 2 stores memories in bfloat16; under float16 they must be float16 (autocast refuses the mix)."""
    model = load_model(make_tiny_model(seed=0), device="cpu", dtype="float16")
    session = Sam2Session(model, _stack(n=3))
    session.add_points(0, 1, [[28, 32]], [1])
    list(session.propagate("forward"))
    outs = session._objects[1].non_cond
    assert outs and all(o["maskmem_features"].dtype == torch.float16 for o in outs.values())
    bf16 = load_model(make_tiny_model(seed=0), device="cpu", dtype="bfloat16")
    assert bf16.memory_dtype is None and model.memory_dtype == torch.float16


def test_a_precision_the_device_cannot_use_is_refused(monkeypatch):
    """torch only warns (and runs float32) for an autocast dtype a device lacks: refuse it at load."""
    import warnings

    real = torch.autocast

    class Refusing(real):
        def __init__(self, device_type, dtype=None, **kwargs):
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.",
                          stacklevel=2)
            super().__init__(device_type, dtype=dtype, enabled=False)

    monkeypatch.setattr(torch, "autocast", Refusing)
    with pytest.raises(ModelLoadError, match="cannot be used on cpu.*Use dtype='float32'"):
        load_model(make_tiny_model(seed=0), device="cpu", dtype="float16")
