"""segment_everything: automatic masks on one frame, as a non-overlapping label image.

Random weights give arbitrary masks, so the model tests check structure (valid labels, filters
respected, session untouched, one encoder run per frame) and parity with a click, never
particular masks. The pieces (NMS, stability, small regions, painting) are checked on
hand-made inputs with known answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_sam2.engine import everything as ev
from napari_sam2.engine.session import Sam2Session
from napari_sam2.engine.tracking import mask_from_logits
from napari_sam2.errors import Sam2InputError

# thresholds low enough for a random network to give masks at all
LOOSE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def sharp_model():
    """The tiny random network with mask logits scaled to a trained network's range (±5).

    A random decoder's logits are ~0.01, so every stability score is 0; scaled, they spread
    over 0..0.4 and the stability filter has something to decide.
    """
    from napari_sam2.testing import make_tiny_model

    model = make_tiny_model(image_size=256, seed=0)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight *= 300
            mlp.proj_out.bias *= 300
    return model


def _frame_masks(labels):
    ids = np.unique(labels)
    return ids[ids > 0]


def _assert_valid_labels(labels, shape, min_area=0):
    assert labels.shape == tuple(shape)
    assert labels.dtype == np.uint16
    ids = _frame_masks(labels)
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # 1..n, no gaps
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        comp, n = ndi.label(labels[sl] == i, structure=np.ones((3, 3)))
        sizes = np.bincount(comp.ravel())[1:]
        assert n >= 1 and sizes.min() >= min_area, (i, sizes)


# --------------------------------------------------------------------------- pieces
def test_point_grid_and_crop_boxes():
    g = ev.point_grid(4)
    assert g.shape == (16, 2)
    np.testing.assert_allclose(np.unique(g[:, 0]), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(g[:4, 1], 0.125)  # x varies fastest, as Meta's grid
    boxes = ev.crop_boxes((100, 160), 1, 0.25)
    assert boxes[0] == ((0, 0, 100, 160), 0)
    assert [layer for _, layer in boxes] == [0, 1, 1, 1, 1]
    cover = np.zeros((100, 160), int)
    for (r0, c0, r1, c1), _layer in boxes[1:]:
        assert 0 <= r0 < r1 <= 100 and 0 <= c0 < c1 <= 160
        cover[r0:r1, c0:c1] += 1
    assert cover.min() >= 1 and cover.max() == 4  # every pixel covered, crops overlap


def test_box_nms_keeps_best_of_overlapping():
    boxes = [(0, 0, 10, 10), (1, 1, 10, 10), (20, 20, 30, 30), (0, 0, 10, 10)]
    scores = [0.5, 0.9, 0.1, 0.2]
    keep = ev.box_nms(boxes, scores, 0.7)
    assert keep.tolist() == [1, 2]  # 1 beats 0 and 3 (IoU 0.81); 2 overlaps nothing
    assert ev.box_nms(boxes, scores, 1.0).tolist() == [1, 0, 3, 2]  # nothing suppressed
    assert ev.box_nms(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_stability_scores_match_definition():
    logits = torch.full((2, 4, 5), -2.0)  # frame 1: empty at both thresholds
    logits[0, :2] = 3.0      # 10 pixels above +1
    logits[0, 2, :2] = 0.5   # 2 more above -1
    s = ev.stability_scores(logits, 0.0, 1.0)
    assert s.shape == (2,)
    assert s[0].item() == pytest.approx(10 / 12)
    assert s[1].item() == 0.0
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 30, 40, generator=rng) * 2
    ref = (x > 1.5).flatten(-2).sum(-1) / (x > -0.5).flatten(-2).sum(-1)
    torch.testing.assert_close(ev.stability_scores(x, 0.5, 1.0), ref.float())


def test_remove_small_regions():
    m = np.zeros((30, 30), bool)
    m[2:20, 2:20] = True
    m[8:10, 8:10] = False          # a 4-pixel hole
    m[25:27, 25:27] = True         # a 4-pixel island
    m[2:6, 0:2] = False            # background on the edge is never a hole
    out, changed = ev.remove_small_regions(m, 10)
    assert changed
    assert out[8:10, 8:10].all() and not out[25:27, 25:27].any()
    assert out.sum() == 18 * 18
    same, changed = ev.remove_small_regions(out, 10)
    assert not changed and np.array_equal(same, out)
    tiny = np.zeros((10, 10), bool)
    tiny[1, 1] = tiny[5:7, 5:7] = True  # every island small: the largest stays
    out, _ = ev.remove_small_regions(tiny, 50)
    assert out.sum() == 4 and out[5:7, 5:7].all()


def _found(mask, iou=0.9):
    r = ev._tight(mask, (0, 0))
    return ev.FoundMask(r[0], r[1], iou, 1.0, (0, 0, *mask.shape))


def test_labels_from_masks_paints_small_on_top_without_overlap():
    shape = (40, 50)
    big = np.zeros(shape, bool)
    big[5:35, 5:45] = True
    inner = np.zeros(shape, bool)
    inner[15:20, 20:26] = True      # nested in big: stays whole
    sliver = np.zeros(shape, bool)
    sliver[0:40, 44:48] = True      # cuts a 1-pixel column off big's right side
    speck = np.zeros(shape, bool)
    speck[1, 1] = True
    labels = ev.labels_from_masks([_found(inner), _found(big), _found(sliver), _found(speck)], shape,
                                  min_area=5)
    _assert_valid_labels(labels, shape, min_area=5)
    assert len(_frame_masks(labels)) == 3      # the speck is gone
    assert labels[1, 1] == 0
    # numbered in raster order of first pixel: sliver (row 0), big (row 5), inner (row 15)
    assert labels[0, 44] == 1 and labels[5, 5] == 2 and labels[15, 20] == 3
    assert (labels == 3).sum() == inner.sum()  # the small object is whole
    assert not np.any((labels == 2) & ~big)
    assert labels[20, 44] == 1                 # the smaller sliver wins over big
    assert labels.dtype == np.uint16
    n = 65536  # one more object than uint16 holds
    many = [ev.FoundMask((0, 2 * i, 1, 2 * i + 1), np.ones((1, 1), bool), 0.5, 1.0, (0, 0, 1, 2 * n))
            for i in range(n)]
    wide = ev.labels_from_masks(many, (1, 2 * n))
    assert wide.dtype == np.uint32 and wide.max() == n and wide[0, -2] == n


def test_settings_are_checked():
    with pytest.raises(Sam2InputError, match="points_per_side"):
        ev.AutoMaskSettings(points_per_side=0)
    with pytest.raises(Sam2InputError, match="pred_iou_thresh"):
        ev.AutoMaskSettings(pred_iou_thresh=1.5)
    with pytest.raises(Sam2InputError, match="crop_overlap_ratio"):
        ev.AutoMaskSettings(crop_overlap_ratio=1.0)
    with pytest.raises(Sam2InputError, match="unknown option 'pointz'"):
        ev.AutoMaskSettings.from_options(pointz=3)


# --------------------------------------------------------------------------- on the network
def test_grid_point_gives_the_masks_of_a_click(tiny_model, blobs_stack):
    """decode_points is SAM 2's click on a frame without memory, many points at once."""
    session = Sam2Session(tiny_model, blobs_stack)
    h, w = session.frame_shape
    grid = ev.point_grid(3)
    with session.model.inference():
        feats = ev.frame_features(session.model, session.cache, session._frames, 2)
        low, iou = ev.decode_points(session.model, feats, grid * session.model.image_size)
    assert low.shape == (9, 3, 64, 64) and iou.shape == (9, 3)
    for k in (0, 4, 8):
        row, col = grid[k, 1] * h, grid[k, 0] * w
        mask = session.add_points(2, 1, [[row, col]], [1])
        best = int(iou[k].argmax())
        assert session.score(2, 1).iou == pytest.approx(float(iou[k, best]), abs=1e-5)
        assert np.array_equal(mask, mask_from_logits(low[k, best][None, None], session.frame_shape))
        session.undo()
    assert session.objects == []


def test_segment_everything_gives_valid_labels_and_leaves_the_session_alone(tiny_model, blobs_stack):
    session = Sam2Session(tiny_model, blobs_stack)
    session.add_points(0, 7, [[40, 45]], [1])
    before = (session.objects, len(session._undo), session.prompts(7), session.mask(0, 7),
              session.quality(7))
    misses = session.cache.misses
    labels = session.segment_everything(3, points_per_side=6, min_area=8, **LOOSE)
    _assert_valid_labels(labels, session.frame_shape, min_area=8)
    assert len(_frame_masks(labels)) >= 2
    assert session.cache.misses == misses + 1       # frame 3 encoded once...
    again = session.segment_everything(3, points_per_side=6, min_area=8, **LOOSE)
    assert session.cache.misses == misses + 1       # ...and not again
    np.testing.assert_array_equal(again, labels)    # deterministic
    session.add_points(3, 8, [[40, 45]], [1])
    assert session.cache.misses == misses + 1       # a click reuses the features
    session.undo()
    after = (session.objects, len(session._undo), session.prompts(7), session.mask(0, 7),
             session.quality(7))
    assert after[0] == before[0] and after[1] == before[1]
    assert [(p.frame, p.kind) for p in after[2]] == [(p.frame, p.kind) for p in before[2]]
    np.testing.assert_array_equal(after[3], before[3])
    np.testing.assert_array_equal(after[4], before[4])
    assert session.undo() == (0, 7)                 # the undo stack still ends with the click
    assert session.objects == []


def test_thresholds_and_areas_are_respected(sharp_model, blobs_stack):
    session = Sam2Session(sharp_model, blobs_stack)
    shape = session.frame_shape
    opts = {"points_per_side": 4, "min_area": 0, "box_nms_thresh": 1.0}
    with session.model.inference():
        feats = ev.frame_features(session.model, session.cache, session._frames, 0)
        every = ev.generate_masks(session.model, feats, shape, ev.AutoMaskSettings(
            pred_iou_thresh=0, stability_score_thresh=0, **opts))
        assert len(every) == 48  # 16 points x 3 masks, nothing filtered (no empty mask here)
        iou_cut = float(np.median([m.predicted_iou for m in every]))
        stab_cut = float(np.median([m.stability for m in every]))
        by_iou = ev.generate_masks(session.model, feats, shape, ev.AutoMaskSettings(
            pred_iou_thresh=iou_cut, stability_score_thresh=0, **opts))
        by_stab = ev.generate_masks(session.model, feats, shape, ev.AutoMaskSettings(
            pred_iou_thresh=0, stability_score_thresh=stab_cut, **opts))
    assert 0 < len(by_iou) < len(every) and all(m.predicted_iou > iou_cut for m in by_iou)
    assert 0 < len(by_stab) < len(every) and all(m.stability >= stab_cut for m in by_stab)
    for m in every:  # the recorded score is the definition applied to the mask's logits
        assert 0.0 <= m.stability <= 1.0 and m.mask.shape == (m.bbox[2] - m.bbox[0], m.bbox[3] - m.bbox[1])
        assert m.mask[0].any() and m.mask[-1].any() and m.mask[:, 0].any() and m.mask[:, -1].any()
    areas = sorted(m.area for m in every)
    hi = areas[len(areas) // 2]
    with session.model.inference():
        small = ev.generate_masks(session.model, feats, shape, ev.AutoMaskSettings(
            pred_iou_thresh=0, stability_score_thresh=0, max_area=hi, **opts))
    assert 0 < len(small) < len(every) and all(m.area <= hi for m in small)
    assert not session.segment_everything(0, points_per_side=4, pred_iou_thresh=0.999).any()


def test_min_and_max_area_in_the_label_image(tiny_model, blobs_stack):
    session = Sam2Session(tiny_model, blobs_stack)
    free = session.segment_everything(0, points_per_side=6, min_area=0, **LOOSE)
    sizes = np.bincount(free.ravel())[1:]
    assert sizes.min() < 30 < sizes.max()   # some pieces below the limit used next
    labels = session.segment_everything(0, points_per_side=6, min_area=30, **LOOSE)
    _assert_valid_labels(labels, session.frame_shape, min_area=30)
    with session.model.inference():
        feats = ev.frame_features(session.model, session.cache, session._frames, 0)
        found = ev.generate_masks(session.model, feats, session.frame_shape,
                                  ev.AutoMaskSettings(points_per_side=6, min_area=0, **LOOSE))
    cap = int(np.median([m.area for m in found]))
    capped = session.segment_everything(0, points_per_side=6, min_area=0, max_area=cap, **LOOSE)
    _assert_valid_labels(capped, session.frame_shape)
    assert capped.any() and np.bincount(capped.ravel())[1:].max() <= cap


def test_crop_layers_and_progress(tiny_model, blobs_stack):
    session = Sam2Session(tiny_model, blobs_stack)
    calls = []
    labels = session.segment_everything(1, points_per_side=4, crop_n_layers=1, min_area=4,
                                        progress=lambda d, t: calls.append((d, t)), **LOOSE)
    _assert_valid_labels(labels, session.frame_shape, min_area=4)
    assert calls[-1] == (5, 5) and [d for d, _ in calls] == [1, 2, 3, 4, 5]  # whole + 4 crops
    with session.model.inference():
        feats = ev.frame_features(session.model, session.cache, session._frames, 1)
        found = ev.generate_masks(session.model, feats, session.frame_shape,
                                  ev.AutoMaskSettings(points_per_side=4, crop_n_layers=1, min_area=0,
                                                      **LOOSE),
                                  image=session.source.normalized(1))
    for m in found:  # every mask lies inside the crop it came from
        assert m.crop[0] <= m.bbox[0] < m.bbox[2] <= m.crop[2]
        assert m.crop[1] <= m.bbox[1] < m.bbox[3] <= m.crop[3]

    class Stop(Exception):
        pass

    def cancel(done, total):
        raise Stop

    with pytest.raises(Stop):
        session.segment_everything(1, points_per_side=4, progress=cancel)


def test_bad_calls_are_one_line_errors(tiny_model, blobs_stack):
    session = Sam2Session(tiny_model, blobs_stack)
    with pytest.raises(Sam2InputError, match="outside the stack"):
        session.segment_everything(99)
    with pytest.raises(Sam2InputError, match="min_area"):
        session.segment_everything(0, min_area=-1)
    with pytest.raises(Sam2InputError, match="unknown option"):
        session.segment_everything(0, point_per_side=4)
