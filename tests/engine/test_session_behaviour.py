"""What a scientist relies on: corrections kept, objects independent, cancel, undo, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2 import Sam2Session
from napari_sam2.errors import Sam2InputError


@pytest.fixture
def session(tiny_model, blobs_stack):
    return Sam2Session(tiny_model, blobs_stack)


def test_correction_survives_repropagation(session):
    session.add_points(0, 1, [[40, 45]], [1])
    first = dict(session.propagate("forward"))
    corrected = session.add_points(4, 1, [[45, 60]], [0])
    assert not np.array_equal(corrected, first[4][1]), "the negative click must change the mask"
    assert session.prompted_frames(1) == [0, 4]
    second = dict(session.propagate("forward"))
    # the corrected frame comes back exactly as corrected, not recomputed by tracking
    np.testing.assert_array_equal(second[4][1], corrected)
    # and later frames are tracked with the correction in memory
    assert any(not np.array_equal(second[f][1], first[f][1]) for f in range(5, 8))


def test_objects_are_independent_and_survive_removal(tiny_model, blobs_stack, session):
    session.add_points(1, 1, [[40, 45]], [1])
    m2 = session.add_box(2, 2, [[10, 10], [50, 60]])
    prompts_before = session.prompts(2)
    session.remove_object(1)
    assert session.objects == [2]
    after = session.prompts(2)
    assert len(after) == len(prompts_before) == 1
    np.testing.assert_array_equal(after[0].box, prompts_before[0].box)
    alone = Sam2Session(tiny_model, blobs_stack)
    np.testing.assert_array_equal(alone.add_box(2, 2, [[10, 10], [50, 60]]), m2)
    ours = dict(session.propagate())
    theirs = dict(alone.propagate())
    for frame in theirs:
        np.testing.assert_array_equal(ours[frame][2], theirs[frame][2])
    with pytest.raises(Sam2InputError, match="unknown object id 1"):
        session.remove_object(1)


def test_objects_removed_together_come_back_with_one_undo(session):
    session.add_points(1, 1, [[40, 45]], [1])
    session.add_box(2, 2, [[10, 10], [50, 60]])
    session.add_points(3, 3, [[20, 90]], [1])
    tracked = dict(session.propagate("forward", obj_ids=[2]))
    with pytest.raises(Sam2InputError, match="unknown object id 9"):
        session.remove_objects([1, 9])
    assert session.objects == [1, 2, 3], "an unknown id removes nothing"
    session.remove_objects([2, 1])
    assert session.objects == [3]
    assert session.undo() == (None, (2, 1))
    assert sorted(session.objects) == [1, 2, 3]
    np.testing.assert_array_equal(session.mask(5, 2), tracked[5][2])  # its tracking too
    assert session.undo() == (3, 3), "then the call before"


def test_add_object_after_propagation(session):
    session.add_points(0, 1, [[40, 45]], [1])
    list(session.propagate())
    session.add_points(5, 3, [[20, 90]], [1])
    frames = dict(session.propagate("forward", obj_ids=[3]))
    assert sorted(frames) == [5, 6, 7] and all(set(m) == {3} for m in frames.values())


def test_cancel_keeps_finished_frames_and_session_usable(session):
    session.add_points(0, 1, [[40, 45]], [1])
    gen = session.propagate("forward")
    done = [next(gen)[0] for _ in range(3)]
    gen.close()
    assert done == [0, 1, 2]
    assert session.score(2, 1) is not None and session.score(3, 1) is None
    # continuing from where it stopped gives the same frames as an uninterrupted run
    rest = dict(session.propagate("forward", start=3))
    assert sorted(rest) == [3, 4, 5, 6, 7]


def test_clear_prompts_and_undo(session):
    a = session.add_points(0, 1, [[40, 45]], [1])
    session.add_points(3, 1, [[46, 54]], [1])
    session.clear_prompts(3, 1)
    assert session.prompted_frames(1) == [0]
    assert session.undo() == (3, 1)
    assert session.prompted_frames(1) == [0, 3]
    assert session.undo() == (3, 1)  # undo the click on frame 3
    assert session.prompted_frames(1) == [0]
    np.testing.assert_array_equal(session.mask(0, 1), a)
    session.clear_prompts(0, 1)  # last prompt: the object goes
    assert session.objects == []
    assert session.undo() == (0, 1)
    assert session.objects == [1]
    assert session.undo() == (0, 1)  # undo the first click: object gone
    assert session.objects == [] and session.undo() is None


def test_undo_refinement_restores_previous_mask(session):
    first = session.add_points(2, 1, [[42, 50]], [1])
    session.add_points(2, 1, [[30, 30]], [0])
    session.undo()
    np.testing.assert_array_equal(session.mask(2, 1), first)
    assert len(session.prompts(1)) == 1


def test_scores_and_quality(session):
    session.add_points(0, 1, [[40, 45]], [1])
    results = list(session.propagate("forward"))
    q = session.quality(1)
    assert q.shape == (8, 2) and np.isfinite(q).all()
    for frame, masks in results:
        score = masks.scores[1]
        assert 0.0 <= score.presence <= 1.0
        assert score == session.score(frame, 1)


def test_plan_matches_propagation(session):
    session.add_points(3, 1, [[40, 45]], [1])
    session.add_points(5, 2, [[20, 90]], [1])
    plan = session.plan_propagation("both", start=1, stop=7)
    # forward from each first prompt, then backward from it: object 2 goes back from frame 5
    assert plan == [3, 4, 5, 6, 4, 3, 2, 1]
    assert [f for f, _ in session.propagate("both", start=1, stop=7)] == plan


def test_box_past_the_edge_is_clipped(session):
    inside = session.add_box(0, 1, [[60, 80], [95.5, 111.5]])
    past = session.add_box(0, 2, [[60, 80], [140, 300]])
    np.testing.assert_array_equal(inside, past)
    np.testing.assert_array_equal(session.prompts(2)[0].box, [[60, 80], [95.5, 111.5]])


def test_two_d_image_is_a_one_frame_stack(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack[0])
    assert s.n_frames == 1
    assert s.add_points(0, 1, [[40, 45]], [1]).shape == blobs_stack.shape[1:]
    rgb = np.repeat(blobs_stack[0][..., None], 3, axis=-1)
    assert Sam2Session(tiny_model, rgb).frame_shape == blobs_stack.shape[1:]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.add_points(9, 1, [[1, 1]], [1]), "frame 9 is outside the stack"),
        (lambda s: s.add_points(0, 1, [[400, 1]], [1]), "outside the frame"),
        (lambda s: s.add_points(0, 1, [[1, 1], [2, 2]], [1]), "2 points but 1 labels"),
        (lambda s: s.add_points(0, 1, [[1, 1]], [2]), "labels must be 1"),
        (lambda s: s.add_points(0, 0, [[1, 1]], [1]), "integers >= 1"),
        (lambda s: s.add_points(0, 1, np.zeros((0, 2)), []), "N >= 1"),
        (lambda s: s.add_box(0, 1, [[5, 5], [5, 20]]), "zero area"),
        (lambda s: s.add_box(0, 1, [[5, 5]]), "two corners"),
        (lambda s: s.add_box(0, 1, [[500, 5], [600, 20]]), "lies outside frame 0"),
        (lambda s: s.add_mask(0, 1, np.ones((10, 10), bool)), "does not match"),
        (lambda s: s.clear_prompts(0, 7), "unknown object id 7"),
        (lambda s: list(s.propagate()), "nothing to propagate"),
        (lambda s: s.propagate(direction="sideways"), "direction must be"),
    ],
)
def test_bad_input_gives_clear_errors(session, call, message):
    with pytest.raises(Sam2InputError, match=message):
        call(session)
    assert session.objects == []  # nothing half-made was left behind


def test_bad_stacks(tiny_model):
    with pytest.raises(ValueError, match="empty"):
        Sam2Session(tiny_model, np.zeros((0, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="got 5-D"):
        Sam2Session(tiny_model, np.zeros((2, 2, 2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="array-like"):
        Sam2Session(tiny_model, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="5 channels"):
        Sam2Session(tiny_model, np.zeros((2, 32, 32, 5), np.uint8))
    nan = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    nan[1] = np.nan
    s = Sam2Session(tiny_model, nan)  # NaN frames do not spoil the contrast of the others
    s.add_points(0, 1, [[10, 10]], [1])
    with pytest.raises(ValueError, match="frame 1 holds no finite value"):
        s.add_points(1, 1, [[10, 10]], [1])
    with pytest.raises(ValueError, match="no finite value"):
        Sam2Session(tiny_model, np.full((2, 16, 16), np.nan, np.float32))
