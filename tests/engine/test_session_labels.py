"""Seeding objects from an instance label image, and composing a frame's label image."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2 import Sam2Session
from napari_sam2.conversions import MAX_OBJECT_ID
from napari_sam2.errors import Sam2InputError


def _label_image(shape=(96, 112)):
    lab = np.zeros(shape, np.uint32)
    lab[10:30, 10:40] = 7
    lab[50:80, 20:45] = 300
    lab[40:60, 70:100] = 70_000
    lab[85:90, 100:105] = 2**31 + 5
    return lab


def test_label_image_seeds_every_id_like_add_mask(tiny_model, blobs_stack):
    lab = _label_image()
    seeded = Sam2Session(tiny_model, blobs_stack)
    ids = seeded.add_label_image(2, lab)
    assert ids == [7, 300, 70_000, 2**31 + 5]
    assert seeded.objects == ids
    one_by_one = Sam2Session(tiny_model, blobs_stack)
    for i in ids:
        one_by_one.add_mask(2, i, lab == i)
    for i in ids:
        np.testing.assert_array_equal(seeded.mask(2, i), lab == i)
        assert seeded.prompts(i)[0].kind == "mask"
    a = dict(seeded.propagate("forward", stop=5))
    b = dict(one_by_one.propagate("forward", stop=5))
    assert sorted(a) == [2, 3, 4]
    for f in a:
        assert set(a[f]) == set(ids)
        for i in ids:
            np.testing.assert_array_equal(a[f][i], b[f][i], err_msg=f"frame {f}, object {i}")


def test_subset_reprompt_and_one_undo_for_the_call(tiny_model, blobs_stack):
    lab = _label_image().astype(np.int64)
    s = Sam2Session(tiny_model, blobs_stack)
    first = s.add_points(2, 300, [[60, 30]], [1])
    assert s.add_label_image(2, lab, ids=[300, 7]) == [7, 300]
    assert s.objects == [300, 7]
    np.testing.assert_array_equal(s.mask(2, 300), lab == 300)  # re-prompted: the mask replaces the click
    assert [p.kind for p in s.prompts(300)] == ["mask"]
    frame, undone = s.undo()
    assert (frame, undone) == (2, (7, 300))
    assert s.objects == [300]
    np.testing.assert_array_equal(s.mask(2, 300), first)
    assert s.undo() == (2, 300) and s.objects == []


@pytest.mark.parametrize("labels, ids, message", [
    (np.zeros((96, 112), np.uint16), None, "holds no object"),
    (np.ones((96, 112), np.float32), None, "integer ids"),
    (np.ones((10, 10), np.uint16), None, "does not match"),
    (np.full((96, 112), -3, np.int32), None, "must be >= 1"),
    (np.full((96, 112), 2**40, np.uint64), None, "too large"),
    (_label_image(), [8], r"\[8\] do not occur"),
    (_label_image(), [0], "integers >= 1"),
])
def test_bad_label_images_are_refused(tiny_model, blobs_stack, labels, ids, message):
    s = Sam2Session(tiny_model, blobs_stack)
    with pytest.raises(Sam2InputError, match=message):
        s.add_label_image(0, labels, ids=ids)
    assert s.objects == [] and s.undo() is None


def test_labels_composes_every_object_higher_id_wins(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    a = np.zeros(blobs_stack.shape[1:], bool)
    a[30:60, 30:60] = True
    b = np.zeros_like(a)
    b[50:70, 50:70] = True
    s.add_mask(0, 9, a)
    s.add_mask(0, 4, b)
    lab = s.labels(0)
    assert lab.dtype == np.uint16
    assert (lab[a] == 9).all() and (lab[b & ~a] == 4).all() and (lab[~a & ~b] == 0).all()
    assert not s.labels(5).any()  # nothing computed there yet
    s.add_mask(1, 70_000, b)
    assert s.labels(1).dtype == np.uint32


def test_propagate_both_yields_a_frame_twice_labels_has_all(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    s.add_points(0, 1, [[40, 45]], [1])
    s.add_points(5, 2, [[20, 90]], [1])
    seen: dict[int, list] = {}
    naive = np.zeros(blobs_stack.shape, np.uint16)
    for frame, masks in s.propagate("both"):
        seen.setdefault(frame, []).append(set(masks))
        naive[frame] = 0  # what a loop that writes each yield over the last does
        for i, m in masks.items():
            naive[frame][m] = i
    assert seen[2] == [{1}, {2}]  # forward with object 1, then backward with object 2
    lab = s.labels(2)
    m1, m2 = s.mask(2, 1), s.mask(2, 2)
    assert (m1 & ~m2).any() and m2.any(), "both objects must be visible on frame 2 to test this"
    np.testing.assert_array_equal(lab == 1, m1 & ~m2)
    np.testing.assert_array_equal(lab == 2, m2)
    assert not (naive[2] == 1).any()  # the naive loop lost object 1


def test_ids_the_session_file_refuses_are_refused(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    with pytest.raises(Sam2InputError, match="too large"):
        s.add_points(0, MAX_OBJECT_ID + 1, [[40, 45]], [1])
    s.add_points(0, MAX_OBJECT_ID, [[40, 45]], [1])
    assert s.objects == [MAX_OBJECT_ID]


def test_empty_mask_and_zero_encode_batch_are_refused(tiny_model, blobs_stack):
    s = Sam2Session(tiny_model, blobs_stack)
    with pytest.raises(Sam2InputError, match="empty: paint at least one pixel"):
        s.add_mask(0, 1, np.zeros(blobs_stack.shape[1:], bool))
    assert s.objects == []
    with pytest.raises(Sam2InputError, match="encode_batch"):
        Sam2Session(tiny_model, blobs_stack, encode_batch=0)
    with pytest.raises(Sam2InputError, match="prefetch"):
        Sam2Session(tiny_model, blobs_stack, prefetch=-1)
