"""Writing masks into labels: the user's labels survive, overlaps are decided, undo is exact."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.label_edits import EditRun, FrameEdit, paint_masks, paint_plan


def test_user_labels_survive_and_higher_id_wins():
    labels = np.zeros((2, 6, 6), np.uint16)
    labels[0, 0, :] = 9  # painted by the user, not a SAM 2 object
    labels[0, 5, 5] = 2  # where object 2 was before
    original = labels.copy()
    a = np.zeros((6, 6), bool)
    a[0:3, 0:3] = True
    b = np.zeros((6, 6), bool)
    b[2:4, 2:4] = True
    edit = paint_masks(labels, (0,), {2: a, 3: b}, sam_ids=[2, 3])
    f = labels[0]
    assert (f[0, :] == 9).all(), "the user's label 9 is untouched"
    assert f[5, 5] == 0, "object 2 no longer predicts this pixel"
    assert f[2, 2] == 3, "overlap: the higher id wins"
    assert f[1, 1] == 2 and f[3, 3] == 3
    assert (labels[1] == 0).all()
    run = EditRun("test", [edit])
    run.undo(labels)
    np.testing.assert_array_equal(labels, original)


def test_writing_one_object_keeps_a_higher_one_and_nothing_changes_twice():
    labels = np.zeros((4, 4), np.uint8)
    labels[1:3, 1:3] = 5
    m = np.ones((4, 4), bool)
    paint_masks(labels, (slice(None), slice(None)), {1: m}, sam_ids=[1, 5])
    assert (labels[1:3, 1:3] == 5).all() and labels[0, 0] == 1
    assert paint_masks(labels, (slice(None), slice(None)), {1: m}, sam_ids=[1, 5]) is None


def test_undo_in_a_strided_view():
    labels = np.zeros((3, 5, 4, 4), np.uint32)  # (T, Z, Y, X), writing z = 2 of t = 1
    m = np.eye(4, dtype=bool)
    edit = paint_masks(labels, (1, 2), {7: m}, sam_ids=[7])
    assert labels[1, 2].trace() == 28 and labels.sum() == 28
    edit.undo(labels)
    assert labels.sum() == 0


def test_a_write_limited_to_a_region_equals_the_whole_frame_write_and_undoes_exactly():
    from napari_sam2.label_edits import box_slices, mask_box, union_box

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (3, 40, 50)).astype(np.uint16) * 7  # user labels 7 and 14
    labels[1, 10:14, 20:25] = 2  # object 2 was here
    whole, cropped = labels.copy(), labels.copy()
    mask = np.zeros((40, 50), bool)
    mask[12:18, 22:30] = True
    box = union_box(mask_box(mask), mask_box(labels[1] == 2))
    assert box == (10, 18, 20, 30)
    e1 = paint_masks(whole, (1,), {2: mask}, [2])
    e2 = paint_masks(cropped, (1,), {2: mask}, [2], region=box_slices(box))
    np.testing.assert_array_equal(whole, cropped)
    assert e2.box == box and e2.flat.size == e1.flat.size
    EditRun("r", [e2]).undo(cropped)
    np.testing.assert_array_equal(cropped, labels)
    assert mask_box(np.zeros((3, 3), bool)) is None
    # where each write lies in the label array: every changed pixel, and only that frame
    for edit, before in ((e1, labels), (e2, labels)):
        after = before.copy()
        paint_masks(after, (1,), {2: mask}, [2])
        changed = np.argwhere(after != before)
        spans = edit.array_box
        assert len(spans) == 3 and spans[0] == slice(1, 2)
        assert all(s.start <= lo and hi < s.stop for s, lo, hi in zip(spans, changed.min(0), changed.max(0)))
    assert e2.array_box[1:] == box_slices(box) and e1.array_box[1:] == (slice(0, 40), slice(0, 50))
    # a frame of a 4-D array indexed (t, z) with the frame's axes last
    e4 = paint_masks(np.zeros((2, 3, 40, 50), np.uint16), (1, 2), {2: mask}, [2], region=box_slices(box))
    assert e4.array_box == (slice(1, 2), slice(2, 3), *box_slices(box))


def _reference_write(before, masks, sam_ids):
    """The rules of the module, pixel by pixel (slow, obviously right)."""
    sam = set(sam_ids) | set(masks)
    after = before.copy()
    for (r, c), v in np.ndenumerate(before):
        if v in masks:  # a written object's old pixel is free again...
            v = 0
        for obj_id in sorted(masks):  # ...and the highest written id claiming it takes it,
            # unless it belongs to the user or to a higher SAM 2 id that is not written
            if masks[obj_id][r, c] and (v == 0 or (v in sam and v < obj_id)):
                v = obj_id
        after[r, c] = v
    return after


def test_the_blockwise_plan_equals_the_rules_pixel_by_pixel_across_block_edges(monkeypatch):
    import napari_sam2.label_edits as le

    rng = np.random.default_rng(1)
    for block in (1, 7, 64, 1 << 18):  # rows per block: 1, a few, and the whole frame in one
        monkeypatch.setattr(le, "_BLOCK_PIXELS", block * 11)
        labels = rng.choice(np.array([0, 0, 0, 2, 4, 6, 9], np.uint16), (2, 23, 11))  # 9: the user's
        original = labels.copy()
        masks = {i: rng.random((23, 11)) < 0.4 for i in (2, 5, 6)}  # 4 is an object not written
        expected = _reference_write(labels[1], masks, [2, 4, 5, 6])
        changed, old, after = le.paint_plan(labels[1], masks, [2, 4, 5, 6])
        np.testing.assert_array_equal(changed, expected != labels[1])
        np.testing.assert_array_equal(old, labels[1][changed])
        np.testing.assert_array_equal(after, expected)
        edit = paint_masks(labels, (1,), masks, [2, 4, 5, 6])
        np.testing.assert_array_equal(labels[1], expected)
        assert (labels[1][labels[1] != original[1]] != 9).all(), "the user's label 9 never changes"
        edit.undo(labels)
        np.testing.assert_array_equal(labels, original)
        assert paint_masks(labels, (0,), {2: labels[0] == 2}, [2, 4, 5, 6]) is None, "no change, no edit"


@pytest.mark.parametrize("n_objects", [1, 3])
def test_empty_blocks_and_painted_blocks_follow_the_same_rules(monkeypatch, n_objects):
    import napari_sam2.label_edits as le

    monkeypatch.setattr(le, "_BLOCK_PIXELS", 4 * 16)  # blocks of 4 rows: some empty, some not
    rng = np.random.default_rng(n_objects)
    frame = np.zeros((24, 16), np.uint16)
    frame[13:17, 2:9] = 9  # a user's label
    frame[20:22, :] = 2  # where SAM 2 object 2 was
    ids = [2, 5, 40][:n_objects]
    masks = {i: rng.random(frame.shape) < 0.3 for i in ids}
    changed, old, after = le.paint_plan(frame, masks, ids)
    np.testing.assert_array_equal(after, _reference_write(frame, masks, ids))
    np.testing.assert_array_equal(changed, after != frame)
    np.testing.assert_array_equal(old, frame[changed])
    labels = after[None].copy()
    FrameEdit.of((0,), changed, old).undo(labels)
    np.testing.assert_array_equal(labels[0], frame)


def test_a_first_write_keeps_no_copy_of_the_zeros_it_replaces():
    frame = np.zeros((2000, 2000), np.uint16)
    mask = np.zeros(frame.shape, bool)
    mask[100:1900, 100:1900] = True
    changed, old, after = paint_plan(frame, {3: mask}, [3])
    assert old.shape == (1800 * 1800,) and not old.any()
    assert old.base is not None and old.base.nbytes <= 8, "one zero stands for all of them"
    np.testing.assert_array_equal(after, mask * 3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int32])
def test_label_boxes_finds_every_id_in_one_pass_as_a_scan_per_id_would(dtype):
    from napari_sam2.label_edits import label_boxes, mask_box

    rng = np.random.default_rng(3)
    plane = np.zeros((90, 70), dtype)
    plane[5:40, 10:30] = rng.choice(np.array([0, 3, 7, 200], dtype), (35, 20))
    plane[60:62, 50:69] = 7
    if np.iinfo(dtype).max > 1 << 21:
        plane[80, 1] = (1 << 21) + 5  # beyond what find_objects lists: looked for on its own
    ids = [3, 7, 200, 9, 1, *([(1 << 21) + 5] if np.iinfo(dtype).max > 1 << 21 else [])]
    boxes = label_boxes(plane, ids)
    assert boxes == {i: mask_box(plane == i) for i in ids}
    assert boxes[9] is None and boxes[1] is None
    assert label_boxes(np.zeros((50, 50), dtype), [1, 2, 3]) == {1: None, 2: None, 3: None}
    assert label_boxes(plane, [7]) == {7: mask_box(plane == 7)}


def test_mask_box_within_a_known_box_equals_the_whole_scan():
    from napari_sam2.label_edits import mask_box

    m = np.zeros((50, 60), bool)
    m[10:20, 30:41] = True
    m[12, 29] = True
    assert mask_box(m, within=(5, 25, 20, 50)) == mask_box(m) == (10, 20, 29, 41)
    assert mask_box(np.zeros((5, 5), bool), within=(0, 3, 0, 3)) is None


@pytest.mark.parametrize("painted", [False, True])
def test_painting_each_object_within_its_box_equals_painting_it_everywhere(monkeypatch, painted):
    import napari_sam2.label_edits as le

    monkeypatch.setattr(le, "_BLOCK_PIXELS", 5 * 40)  # blocks of 5 rows
    rng = np.random.default_rng(7)
    frame = np.zeros((37, 40), np.uint16)
    if painted:
        frame[3:30, 5:35] = rng.choice(np.array([0, 2, 6, 9, 11], np.uint16), (27, 30))  # 9: the user's
    masks, boxes = {}, {}
    for obj_id, (r0, r1, c0, c1) in {2: (0, 12, 0, 15), 6: (8, 33, 20, 40), 11: (30, 37, 2, 9),
                                     14: (0, 37, 0, 40)}.items():
        m = np.zeros(frame.shape, bool)
        m[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) < 0.5
        masks[obj_id] = m
        boxes[obj_id] = (r0 - 1 if r0 else 0, r1, c0, c1 + 2)  # loose boxes are fine
    masks[20] = np.zeros(frame.shape, bool)
    boxes[20] = None  # an object with no pixel any more
    sam = [2, 6, 11, 14, 20]
    want = le.paint_plan(frame, masks, sam)
    got = le.paint_plan(frame, masks, sam, boxes)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    region = (slice(4, 30), slice(3, 38))
    labels, again = frame[None].copy(), frame[None].copy()
    le.paint_masks(labels, (0,), masks, sam, region=region)
    le.paint_masks(again, (0,), masks, sam, region=region, boxes=boxes)
    np.testing.assert_array_equal(again, labels)


def test_shifted_boxes_follow_the_region_and_clip_to_it():
    from napari_sam2.label_edits import shifted_boxes

    region = (slice(10, 50), slice(20, 60))
    assert shifted_boxes({1: (12, 30, 15, 70), 2: None}, region) == {1: (2, 20, 0, 40), 2: None}
    assert shifted_boxes(None, region) is None


def test_ids_present_finds_which_ids_a_volume_holds():
    from napari_sam2.label_edits import ids_present

    labels = np.zeros((2, 3, 8, 8), np.uint16)
    labels[1, 2, 3, 3] = 7
    labels[0, 0, 0, 0] = 300
    labels[0, 1, 5, 5] = 9  # not asked for
    assert ids_present(labels, [7, 300, 4]) == [7, 300]
    assert ids_present(labels[0, 0], [300]) == [300]
    assert ids_present(labels, []) == [] and ids_present(labels, [5]) == []


def test_undo_ids_puts_back_only_the_pixels_of_the_objects_asked_for():
    labels = np.zeros((1, 8, 8), np.uint32)
    labels[0, :2] = 3
    labels[0, 2:4] = 5
    labels[0, 4:6] = 2**32 - 2  # a 32-bit id
    labels[0, 6:, :4] = 40  # the user's
    before = labels.copy()
    empty = np.zeros((8, 8), bool)
    edit = paint_masks(labels, (0,), {3: empty, 5: empty, 2**32 - 2: empty}, {3, 5, 2**32 - 2})
    assert not np.isin(labels, [3, 5, 2**32 - 2]).any() and (labels[0, 6:, :4] == 40).all()
    edit.undo_ids(labels, [3, 2**32 - 2])
    expected = before.copy()
    expected[0, 2:4] = 0  # 5 stays deleted
    np.testing.assert_array_equal(labels, expected)
