"""Which frames the quality strip flags (no Qt)."""

from __future__ import annotations

import numpy as np


def test_frames_are_flagged_when_lost_low_or_dropping():
    from napari_sam2.quality import flagged_frames, frame_states

    nan = np.nan
    q = np.array([
        [0.99, 0.92],  # ok
        [0.98, 0.90],  # ok
        [0.97, 0.62],  # above 0.5 but 0.3 below the usual 0.9: a drop
        [0.20, 0.91],  # presence low: lost
        [0.99, 0.40],  # low
        [nan, nan],    # not computed
        [0.99, 0.91],  # ok
    ])
    assert frame_states(q) == ["ok", "ok", "low", "lost", "low", "none", "ok"]
    np.testing.assert_array_equal(flagged_frames(q), [2, 3, 4])
    np.testing.assert_array_equal(flagged_frames(q, drop=1.0), [3, 4])
    assert flagged_frames(np.full((3, 2), np.nan)).size == 0
