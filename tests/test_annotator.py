"""The annotator core without Qt or a display: prompts, propagation, delete, undo and revert.

These drive :class:`napari_sam2.annotator.Annotator` as the dock does (the engine call and
``prepare`` where the worker runs, ``commit`` / ``apply`` where the labels live) on a real
random-initialised SAM 2 session.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.annotator import Annotator, ProgressClock
from napari_sam2.label_edits import EditRun
from napari_sam2.stack_layout import StackLayout


@pytest.fixture
def core(tiny_model, blobs_stack):
    from napari_sam2 import Sam2Session

    annotator = Annotator(np.zeros(blobs_stack.shape, np.uint16))
    annotator.model = tiny_model
    annotator.layout = StackLayout(blobs_stack.shape)
    annotator.session = Sam2Session(tiny_model, blobs_stack)
    return annotator


def _click(core, frame, obj_id, point, label=1):
    """A click as the dock sends it: the engine call in the worker, the write on the GUI side."""
    returned = []

    def call(session):
        returned.append(session.add_points(frame, obj_id, [point], [label]))
        return returned[-1]

    core.commit(core.prompt(frame, obj_id, call), "click")
    return returned[0]


def test_a_click_paints_the_mask_the_engine_returned_and_undo_takes_it_back(core):
    obj = core.add_object()
    assert (obj, core.active_id, core.objects) == (1, 1, {1: "object 1"})
    mask = _click(core, 2, obj, (44, 51))
    assert mask.any(), "the test model must see something"
    np.testing.assert_array_equal(core.labels[2] == obj, mask)
    assert not core.labels[[0, 1, 3]].any(), "only the clicked frame changes"
    assert [r.label for r in core.runs] == ["click"]
    assert core.undo_prompt() == (2, obj)
    assert not core.labels.any()


def test_a_prepared_write_reads_the_labels_only_until_it_is_applied(core):
    obj = core.add_object()
    core.session.add_points(3, obj, [(46, 54)], [1])
    write = core.prepare(3, {obj: core.engine_mask(3, obj)})
    assert write.region is not None and not core.labels.any(), "prepare does not write"
    core.labels[3, :2, :2] = 99  # the user paints meanwhile
    core.forget_where(3)
    edit = core.apply(write)  # prepared before the change: painted again from the masks
    assert edit is not None and (core.labels[3, :2, :2] == 99).all()
    np.testing.assert_array_equal(core.labels[3] == obj, core.engine_mask(3, obj))


def test_propagation_then_revert_puts_back_every_pixel(core):
    from napari_sam2.label_edits import EditRun

    obj = core.add_object()
    _click(core, 0, obj, (40, 45))
    core.labels[5, :3, :3] = 99  # a label of the user's
    before = core.labels.copy()
    run = EditRun("propagation")
    for frame, masks in core.session.propagate():
        edit = core.apply(core.prepare(frame, dict(masks.items())))
        if edit is not None:
            run.edits.append(edit)
    core.push_run(run)
    assert all((core.labels[f] == obj).any() for f in range(8))
    assert (core.labels[5, :3, :3] == 99).all(), "the user's label survives"
    assert core.frames_of(run) == list(range(1, 8))
    assert core.revert_last_run() is run
    np.testing.assert_array_equal(core.labels, before)
    assert core.revert_last_run() is None


def test_delete_is_prepared_apart_from_the_labels_and_undoes_exactly(core):
    a, b = core.add_object(), core.add_object()
    _click(core, 1, a, (42, 48))
    _click(core, 4, a, (48, 57))
    _click(core, 4, b, (10, 10))
    core.labels[4, -3:, -3:] = 99
    before = core.labels.copy()
    writes = core.prepare_delete([a])  # the worker's half
    assert a not in core.session.objects and b in core.session.objects
    np.testing.assert_array_equal(core.labels, before)
    assert sorted(w.frame for w in writes) == [1, 4], "only frames that hold the object"
    run = core.finish_delete([a], writes)  # the GUI thread's half
    assert not (core.labels == a).any() and set(core.objects) == {b}
    np.testing.assert_array_equal(core.labels == b, before == b)
    assert (core.labels[4, -3:, -3:] == 99).all()
    run.undo(core.labels)
    np.testing.assert_array_equal(core.labels, before)


def test_progress_clock_says_frames_rate_and_time_left():
    now = [0.0]
    clock = ProgressClock(40, clock=lambda: now[0])
    assert clock.text() == "0 / 40 frames"
    clock.step(10)
    now[0] = 5.0
    assert clock.text("slices") == "10 / 40 slices · 2.0 slices/s · 15 s left"
    clock.step(30)
    assert clock.text() == "40 / 40 frames · 8.0 frames/s"


def test_two_writes_of_one_frame_prepared_before_either_is_applied_keep_both_objects(core):
    # "both" with objects anchored on different frames yields a frame twice (objects going
    # forward, then those going backward); the worker may prepare the second before the
    # labels hold the first, and the second must not paint over it
    first, second = core.add_object(), core.add_object()
    a = np.zeros(core.labels.shape[1:], bool)
    a[10:30, 10:30] = True
    b = np.zeros_like(a)
    b[20:40, 20:40] = True
    write_b = core.prepare(1, {second: b})
    write_a = core.prepare(1, {first: a})  # the labels do not hold the higher id yet
    edits = [core.apply(write_b), core.apply(write_a)]
    expected = np.where(b, second, np.where(a, first, 0))  # the higher id wins where they meet
    np.testing.assert_array_equal(core.labels[1], expected)
    for edit in reversed(edits):  # and each write undoes exactly
        edit.undo(core.labels)
    assert not core.labels.any()


def test_new_ids_follow_the_labels_without_a_scan_per_object():
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[1, 0, 0] = 30  # known to the caller, not passed: looked up once
    core = Annotator(labels)
    core.layout = StackLayout(labels.shape)
    assert core.next_free_id() == 31
    labels[1, 0, 1] = 60  # written behind the annotator's back, then said
    core.forget_where()
    assert core.add_object() == 61
    fresh = np.zeros((2, 8, 8), np.uint16)
    core.set_labels(fresh, highest=0)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    core.apply(core.prepare(0, {70: mask}))  # the annotator's own write
    assert core.next_free_id() == 71
    core.labels_painted([np.uint16(90)])  # a brush stroke of label 90
    assert core.next_free_id() == 91
    fresh[0, 7, 7] = 120
    core.labels_painted(None)  # painted, values unknown: looked up again
    assert core.next_free_id() == 121


def test_a_write_prepared_with_the_engines_boxes_equals_one_without(core):
    obj = core.add_object()
    mask = core.session.add_points(1, obj, [(44, 51)], [1])
    assert mask.any()
    rows, cols = np.nonzero(mask)
    loose = (max(rows.min() - 3, 0), rows.max() + 4, max(cols.min() - 2, 0), cols.max() + 5)
    plain = core.prepare(1, {obj: mask})
    boxed = core.prepare(1, {obj: mask}, within={obj: loose})
    assert plain.region == boxed.region and plain.boxes == boxed.boxes
    np.testing.assert_array_equal(plain.new, boxed.new)


def _square(shape, top, left, size=4):
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_each_plane_of_a_4d_stack_keeps_its_own_record_of_where_objects_are():
    """Tracked through t at one z, then at another, then back: an object's old pixels are found."""
    labels = np.zeros((3, 2, 16, 16), np.uint16)  # (t, z, y, x)
    core = Annotator(labels)
    obj = core.add_object()
    at = {z: StackLayout(labels.shape, video_axis=0, fixed={1: z}) for z in (0, 1)}
    core.layout = at[1]
    core.apply(core.prepare(1, {obj: _square((16, 16), 0, 0)}))
    core.layout = at[0]
    core.apply(core.prepare(1, {obj: _square((16, 16), 8, 8)}))
    core.layout = at[1]
    core.apply(core.prepare(1, {obj: _square((16, 16), 12, 0)}))  # the object moved on z = 1
    np.testing.assert_array_equal(labels[1, 1] == obj, _square((16, 16), 12, 0))
    np.testing.assert_array_equal(labels[1, 0] == obj, _square((16, 16), 8, 8))


def test_a_write_lands_on_the_plane_it_was_prepared_for_when_the_layout_changes_meanwhile():
    """A propagated frame in flight while the user moves to another z (the dock follows the slider)."""
    labels = np.zeros((3, 2, 16, 16), np.uint16)
    core = Annotator(labels)
    obj = core.add_object()
    core.layout = StackLayout(labels.shape, video_axis=0, fixed={1: 0})
    write = core.prepare(2, {obj: _square((16, 16), 4, 4)})
    core.layout = StackLayout(labels.shape, video_axis=0, fixed={1: 1})
    edit = core.apply(write)
    assert edit is not None and edit.index[:2] == (2, 0)
    np.testing.assert_array_equal(labels[2, 0] == obj, _square((16, 16), 4, 4))
    assert not labels[:, 1].any()
    write = core.prepare(1, {obj: _square((16, 16), 0, 0)})
    core.layout = None  # the session ended (the image was removed): a write in flight still lands
    assert core.apply(write) is not None and (labels[1, 1] == obj).sum() == 16


def test_a_run_goes_back_into_the_labels_it_was_written_into_after_the_target_changed():
    """The user points the masks at their own Labels layer, then reverts the last run."""
    sam, mine = np.zeros((3, 16, 16), np.uint16), np.zeros((3, 16, 16), np.uint16)
    mine[:, :6, :6] = 40  # the user's own labels, where the run painted in the other array
    core = Annotator(sam)
    core.layout = StackLayout(sam.shape)
    obj = core.add_object()
    run = EditRun("propagation", [core.apply(core.prepare(t, {obj: _square((16, 16), 0, 0, 8)}))
                                  for t in range(3)])
    core.push_run(run)
    assert (sam == obj).sum() == 3 * 64 and [a is sam for a in run.targets] == [True]
    core.set_labels(mine)
    mine_before = mine.copy()
    assert core.revert_last_run() is run
    assert not sam.any(), "the run went back where it was written"
    np.testing.assert_array_equal(mine, mine_before)


def test_undo_and_delete_go_where_an_objects_pixels_are_after_the_target_changed(core):
    """A click painted into one array; the user then chooses their own Labels layer."""
    obj = core.add_object()
    first = _click(core, 2, obj, (44, 51))
    _click(core, 2, obj, (40, 48))
    sam = core.labels
    mine = np.zeros_like(sam)
    mine[:, :6, :6] = 40
    core.set_labels(mine)
    mine_before = mine.copy()
    assert core.undo_prompt() == (2, obj)
    np.testing.assert_array_equal(sam[2] == obj, first)  # the first click's mask, where it was
    np.testing.assert_array_equal(mine, mine_before)
    run = core.finish_delete([obj], core.prepare_delete([obj]))
    assert not (sam == obj).any() and [a is sam for a in run.targets] == [True]
    np.testing.assert_array_equal(mine, mine_before)
    run.undo(mine)  # each edit goes back into its own array
    np.testing.assert_array_equal(sam[2] == obj, first)


def test_an_array_no_longer_held_anywhere_is_not_written_and_not_kept_alive():
    import gc
    import weakref

    old = np.zeros((2, 16, 16), np.uint16)
    core = Annotator(old)
    core.layout = StackLayout(old.shape)
    obj = core.add_object()
    core.apply(core.prepare(1, {obj: _square((16, 16), 2, 2)}))
    gone = weakref.ref(old)
    new = np.zeros_like(old)
    core.set_labels(new)
    del old
    gc.collect()
    assert gone() is None, "the annotator does not keep a layer's array alive"
    assert core.prepare_delete([obj]) == [] and not new.any()


def test_a_delete_prepared_after_the_session_ended_still_takes_the_pixels_away():
    """The user deletes an object, then (before the worker runs) moves to another slice."""
    labels = np.zeros((2, 3, 16, 16), np.uint16)  # (t, z, y, x)
    core = Annotator(labels)
    obj = core.add_object()
    layout = StackLayout(labels.shape, video_axis=0, fixed={1: 2})
    core.layout = layout
    for t in range(2):
        core.apply(core.prepare(t, {obj: _square((16, 16), 2, 2)}))
    core.layout = None  # the dock's session ended meanwhile
    run = core.finish_delete([obj], core.prepare_delete([obj], layout=layout))
    assert not labels.any() and len(run.edits) == 2 and obj not in core.objects


def test_a_delete_with_no_session_at_all_clears_every_plane():
    """The image was removed (no session, no layout): Delete still takes the object's pixels away."""
    labels = np.zeros((2, 3, 16, 16), np.uint16)  # (t, z, y, x), the object tracked at z = 1 and 2
    core = Annotator(labels)
    obj = core.add_object()
    for z in (1, 2):
        core.layout = StackLayout(labels.shape, video_axis=0, fixed={1: z})
        core.apply(core.prepare(1, {obj: _square((16, 16), 2, 2)}))
    labels[0, 0, :2, :2] = 7  # the user's own label
    core.layout = None
    run = core.finish_delete([obj], core.prepare_delete([obj]))
    assert not (labels == obj).any() and len(run.edits) == 2
    assert (labels[0, 0, :2, :2] == 7).all()
    run.undo(labels)
    assert (labels[1, 1:] == obj).sum() == 2 * 16


def test_undoing_a_seeding_puts_its_frame_back_and_clears_only_what_was_tracked(tiny_model):
    """The seeded frame as before the seeding; the objects' pixels off the frames tracked since."""
    from napari_sam2 import Sam2Session
    from napari_sam2.annotator import Unseeding

    session = Sam2Session(tiny_model, np.random.default_rng(0).random((5, 32, 32), np.float32))
    labels = np.zeros((5, 32, 32), np.uint16)
    labels[1, :4, :4] = 7  # the user's label 7, already there on frame 1 ...
    labels[4, -4:, -4:] = 7  # ... and on frame 4, which nothing tracks
    core = Annotator(labels)
    core.session, core.layout = session, StackLayout(labels.shape)
    seeds = np.zeros((32, 32), np.uint16)
    seeds[:4, :4], seeds[10:20, 10:20] = 7, 9
    ids = session.add_label_image(1, seeds)
    core.commit(core.prepare(1, {i: seeds == i for i in ids}), "seed")
    for frame, masks in session.propagate("forward", stop=3):  # frames 1-2 tracked
        core.apply(core.prepare(frame, masks))
    assert (labels[2] > 0).any()
    res, unseeding = core.undo_prompt_prepared()
    assert res == (1, (7, 9)) and isinstance(unseeding, Unseeding)
    core.finish_unseeding(unseeding)
    expected = np.zeros_like(labels)
    expected[1, :4, :4] = 7
    expected[4, -4:, -4:] = 7
    np.testing.assert_array_equal(labels, expected)
