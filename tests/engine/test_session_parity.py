"""The engine does not change SAM 2: its masks equal transformers' own session's.

The reference is transformers' ``Sam2VideoInferenceSession`` used as its documentation shows,
with every frame preprocessed and preloaded, fed with the same model inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _reference_session import Reference

from napari_sam2 import Sam2Session
from napari_sam2.engine.tracking import mask_from_logits


def _stack(n=10, h=72, w=88, seed=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        disc = ((yy - 30 - i) ** 2 + (xx - 30 - 2 * i) ** 2) < 12 ** 2
        frames.append(30 * rng.random((h, w)) + 180 * disc + 40 * (xx > 60))
    return np.stack(frames).astype(np.uint8)


def _assert_same(ours, ref, context):
    assert set(ours) == set(ref), context
    for obj_id in ref:
        np.testing.assert_array_equal(ours[obj_id], ref[obj_id], err_msg=f"{context}, object {obj_id}")


def _propagate_both(model, session, ref):
    ours = dict(session.propagate("both"))
    theirs = dict(ref.propagate(reverse=False))
    theirs.update(ref.propagate(reverse=True))
    return ours, theirs


@pytest.mark.parametrize("prompt_frame", [0, 4])
def test_clicks_and_propagation_match_transformers(tiny_model, prompt_frame):
    stack = _stack()
    session = Sam2Session(tiny_model, stack)
    ref = Reference(tiny_model, session)
    clicks = {1: ([[30, 30], [50, 20]], [1, 0]), 2: ([[60, 75]], [1])}
    ours_click = {}
    for obj_id, (pts, labs) in clicks.items():
        ours_click[obj_id] = session.add_points(prompt_frame, obj_id, pts, labs)
        ref.points(prompt_frame, obj_id, pts, labs)
    _assert_same(ours_click, ref.run_frame(prompt_frame), "click")
    assert any(m.any() for m in ours_click.values()), "a random network that sees nothing tests nothing"

    ours, theirs = _propagate_both(tiny_model, session, ref)
    assert sorted(ours) == list(range(len(stack)))
    for frame in theirs:
        _assert_same(ours[frame], theirs[frame], f"frame {frame}")


def test_box_and_mask_prompts_match_transformers(tiny_model):
    stack = _stack(seed=5)
    session = Sam2Session(tiny_model, stack)
    ref = Reference(tiny_model, session)
    box = [[20, 18], [45, 50]]
    seed = np.zeros(stack.shape[1:], bool)
    seed[40:60, 55:80] = True
    got_box = session.add_box(2, 1, box)
    got_mask = session.add_mask(2, 2, seed)
    ref.box(2, 1, box)
    ref.mask(2, 2, seed)
    theirs = ref.run_frame(2)
    np.testing.assert_array_equal(got_box, theirs[1])
    # a mask prompt is SAM 2's truth on its frame: returned exactly as given
    np.testing.assert_array_equal(got_mask, seed)

    ours, theirs = _propagate_both(tiny_model, session, ref)
    for frame in theirs:
        if frame == 2:
            np.testing.assert_array_equal(ours[frame][2], seed)
            np.testing.assert_array_equal(ours[frame][1], theirs[frame][1])
        else:
            _assert_same(ours[frame], theirs[frame], f"frame {frame}")


def test_forward_only_and_backward_only(tiny_model):
    stack = _stack(seed=7)
    session = Sam2Session(tiny_model, stack)
    ref = Reference(tiny_model, session)
    session.add_points(6, 1, [[40, 40]], [1])
    ref.points(6, 1, [[40, 40]], [1])
    ref.run_frame(6)
    back = list(session.propagate("backward"))
    assert [f for f, _ in back] == [6, 5, 4, 3, 2, 1, 0]
    theirs = dict(ref.propagate(reverse=True))
    for frame, masks in back:
        _assert_same(masks, theirs[frame], f"backward frame {frame}")
    fwd = list(session.propagate("forward"))
    assert [f for f, _ in fwd] == [6, 7, 8, 9]


def test_pruned_memory_gives_the_same_masks_on_a_long_stack(tiny_model):
    """Dropping what SAM 2 no longer reads must not change a single pixel."""
    n = 80
    stack = _stack(n=n, h=48, w=48, seed=11)
    pruned = Sam2Session(tiny_model, stack, keep_frames=16)
    full = Sam2Session(tiny_model, stack, keep_frames=None)
    for s in (pruned, full):
        s.add_points(40, 1, [[20, 20]], [1])
    a = dict(pruned.propagate("both"))
    b = dict(full.propagate("both"))
    for frame in range(n):
        np.testing.assert_array_equal(a[frame][1], b[frame][1], err_msg=f"frame {frame}")
    obj = pruned._objects[1]
    # kept: 16 frames on each side of the prompt, and the 16 behind the last frame (0)
    assert sorted(obj.non_cond) == list(range(0, 17)) + [f for f in range(24, 57) if f != 40]
    assert len(full._objects[1].non_cond) == n - 1


def test_refinement_click_feeds_previous_logits_like_sam2_demo(tiny_model):
    """A second click refines: the previous mask logits go back into the decoder."""
    stack = _stack(seed=13)
    session = Sam2Session(tiny_model, stack)
    session.add_points(3, 1, [[30, 30]], [1])
    first_logits = session._objects[1].cond[3]["pred_masks"].clone()
    refined = session.add_points(3, 1, [[55, 70]], [0])

    # the reference: transformers' own single-frame inference, given the previous logits
    ref = Reference(tiny_model, session)
    ref.points(3, 1, [[30, 30], [55, 70]], [1, 0])
    idx = ref.state.obj_id_to_idx(1)
    with torch.inference_mode():
        out = tiny_model._run_single_frame_inference(
            inference_session=ref.state, frame_idx=3, obj_idx=idx, batch_size=1, is_init_cond_frame=True,
            point_inputs=ref.state.point_inputs_per_obj[idx][3], mask_inputs=None, reverse=False,
            prev_sam_mask_logits=torch.clamp(first_logits, -32, 32),
        )
    np.testing.assert_array_equal(refined, mask_from_logits(out["pred_masks"], session.frame_shape))
    # and it differs from giving both clicks at once without the previous mask
    oneshot = Sam2Session(tiny_model, stack).add_points(3, 1, [[30, 30], [55, 70]], [1, 0])
    assert not np.array_equal(refined, oneshot)
