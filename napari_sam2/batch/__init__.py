"""Segment many stacks on a dask.distributed cluster: ``napari-sam2 batch`` and :func:`run_batch`.

One task per stack (SAM 2's memory runs through a stack in order), each running the code of
``napari-sam2 segment``, so every stack's labels are what ``segment`` writes for it. Workers
load the model once and keep it. A broken stack is reported and the others go on; a rerun skips
stacks that are complete for the same input and settings and retries the others. Needs the
``batch`` extra (``pip install "napari-sam2[batch]"``); importing this module imports neither
dask.distributed nor torch.
"""

from __future__ import annotations

from napari_sam2.batch.runner import run_batch

__all__ = ["run_batch"]
