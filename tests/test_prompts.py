"""The one Prompt type and the rule of which prompts on a frame still count."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.prompts import Prompt, clears_earlier_prompts, prompts_in_effect


def clicks(frame, *, replace=False):
    return Prompt(frame, "points", points=np.array([[1.0, 2.0]]), labels=np.array([1]), replace=replace)


def box(frame):
    return Prompt(frame, "box", box=np.array([[0.0, 0.0], [4.0, 4.0]]))


def mask(frame):
    return Prompt(frame, "mask", mask=np.ones((4, 4), bool))


@pytest.mark.parametrize(("prompt", "clears"), [
    (clicks(0), False),
    (clicks(0, replace=True), True),
    (box(0), True),
    (mask(0), True),
])
def test_only_added_clicks_keep_the_frames_earlier_prompts(prompt, clears):
    assert clears_earlier_prompts(prompt) is clears


def test_prompts_in_effect_drops_what_a_later_prompt_on_its_frame_replaced():
    given = [
        clicks(0), box(0), clicks(0),           # the box replaces the first clicks; refined after
        clicks(1), clicks(1),                   # refinement clicks all count
        mask(2), clicks(2, replace=True),       # replace drops the mask
        clicks(3), mask(3),                     # a mask drops the clicks
        box(4), box(4),                         # a second box replaces the first
    ]
    kept = prompts_in_effect(given)
    # positions found by identity: the result holds the given prompts themselves, not copies
    assert [next(i for i, q in enumerate(given) if q is p) for p in kept] == [1, 2, 3, 4, 6, 8, 10]


def test_prompts_in_effect_is_stable_and_leaves_its_input_alone():
    given = [clicks(0), clicks(1), box(0), clicks(1)]
    before = list(given)
    kept = prompts_in_effect(given)
    assert given == before
    assert prompts_in_effect(kept) == kept
    assert prompts_in_effect([]) == []


def test_mask_path_is_optional_and_defaults_to_none():
    assert mask(0).mask_path is None
    read = Prompt(3, "mask", mask=np.zeros((2, 2), bool), mask_path="m/obj1_f3.tif")
    assert read.mask_path == "m/obj1_f3.tif"


def test_the_prompt_type_is_shared_by_engine_files_and_the_package():
    import napari_sam2
    from napari_sam2.io import session_file

    assert napari_sam2.Prompt is Prompt
    assert session_file.Prompt is Prompt
