"""Prompts: what the user gave SAM 2 for one object on one frame, and which of them still count.

One :class:`Prompt` type serves the engine
(:meth:`~napari_sam2.engine.session.Sam2Session.prompts`), session files
(:mod:`napari_sam2.io.session_file`) and the widget's prompt layers. This module needs only
numpy, so the file readers and writers use it without importing torch.

The replay rule lives here too: on a frame, clicks added without ``replace`` refine what the
frame already has; any other prompt (a box, a mask, or clicks with ``replace``) starts the frame
afresh, so the frame's earlier prompts no longer count (:func:`clears_earlier_prompts`,
:func:`prompts_in_effect`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["Prompt", "clears_earlier_prompts", "prompts_in_effect"]


@dataclass
class Prompt:
    """One prompt as the user gave it, in frame pixels.

    Replaying an object's prompts in order with the session's ``add_*`` methods reproduces it.

    Attributes
    ----------
    frame : int
        The frame the prompt is on.
    kind : {"points", "box", "mask"}
        Which of the fields below hold the prompt.
    points : numpy.ndarray, optional
        ``(N, 2)`` float ``(row, col)`` clicks (``kind="points"``).
    labels : numpy.ndarray, optional
        ``(N,)`` int, 1 for a click on the object, 0 on the background (``kind="points"``).
    box : numpy.ndarray, optional
        ``(2, 2)`` float corners ``[[row0, col0], [row1, col1]]`` (``kind="box"``).
    mask : numpy.ndarray, optional
        ``(H, W)`` bool, the object's pixels (``kind="mask"``).
    replace : bool
        A points prompt that replaced the frame's earlier prompts instead of adding to them.
    mask_path : str, optional
        For a mask prompt of a session file: the mask's TIFF path as written in the file
        (relative to the file). None for prompts that were not read from or saved to a file.
    """

    frame: int
    kind: str
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    replace: bool = False
    mask_path: str | None = None


def clears_earlier_prompts(prompt: Prompt) -> bool:
    """Whether a prompt makes the earlier prompts of its frame (same object) stop counting.

    A box, a mask, or a points prompt with ``replace`` replaces everything the frame had; only
    points added without ``replace`` refine the frame's earlier prompts.

    Parameters
    ----------
    prompt : Prompt
        A prompt of one object.

    Returns
    -------
    bool
        True if the frame's earlier prompts no longer count once this one is given.
    """
    return prompt.kind == "mask" or prompt.kind == "box" or prompt.replace


def prompts_in_effect(prompts: Iterable[Prompt]) -> list[Prompt]:
    """The prompts of one object that still count, in their order.

    A prompt stops counting when a later prompt on its frame clears the frame's earlier
    prompts (:func:`clears_earlier_prompts`). This is what a session holds after the prompts
    are given to it in order.

    Parameters
    ----------
    prompts : iterable of Prompt
        One object's prompts, in the order they were given.

    Returns
    -------
    list of Prompt
        The prompts that count, in their order (the same objects, not copies).
    """
    kept: list[Prompt] = []
    for prompt in prompts:
        if clears_earlier_prompts(prompt):
            kept = [p for p in kept if p.frame != prompt.frame]
        kept.append(prompt)
    return kept
