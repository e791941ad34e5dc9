"""Objects seeded from a label image are saved as mask prompts and replay to the same result."""

from __future__ import annotations

import json

import numpy as np

from napari_sam2.engine.session import Sam2Session
from napari_sam2.io.session_file import (
    read_session,
    replay,
    session_from_engine,
    write_session,
)


def _labels(shape):
    lab = np.zeros(shape, np.uint32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab[(yy - 40) ** 2 + (xx - 45) ** 2 < 12 ** 2] = 9
    lab[10:25, 70:95] = 123456  # an id beyond uint16
    return lab


def test_seeded_objects_round_trip_and_replay(tiny_model, blobs_stack, tmp_path):
    session = Sam2Session(tiny_model, blobs_stack)
    session.add_points(0, 2, [[40, 45]], [1])
    lab0, lab5 = _labels(session.frame_shape), _labels(session.frame_shape)
    lab5[lab5 == 9] = 0
    assert session.add_label_image(0, lab0) == [9, 123456]
    assert session.add_label_image(5, lab5) == [123456]
    path = write_session(tmp_path / "seeded.json", session_from_engine(session))
    data = json.loads(path.read_text())
    by_id = {o["id"]: o["prompts"] for o in data["objects"]}
    assert by_id[9] == [{"frame": 0, "mask": "seeded_masks/obj9_f0.tif"}]
    assert [p["frame"] for p in by_id[123456]] == [0, 5] and all("mask" in p for p in by_id[123456])

    loaded = read_session(path)
    again = Sam2Session(tiny_model, blobs_stack)
    replay(loaded, again)
    assert again.objects == session.objects
    for obj in session.objects:
        assert ([(p.frame, p.kind) for p in again.prompts(obj)]
                == [(p.frame, p.kind) for p in session.prompts(obj)])
    np.testing.assert_array_equal(again.mask(0, 9), lab0 == 9)
    np.testing.assert_array_equal(again.mask(5, 123456), lab5 == 123456)
    first = {f: {o: m.copy() for o, m in masks.items()} for f, masks in session.propagate("forward", stop=4)}
    second = {f: dict(masks) for f, masks in again.propagate("forward", stop=4)}
    assert first.keys() == second.keys()
    for f, masks in first.items():
        assert masks.keys() == second[f].keys()
        for o, m in masks.items():
            np.testing.assert_array_equal(m, second[f][o])
