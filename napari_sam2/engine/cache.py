"""A bounded cache of image features, shared by all objects of a session.

SAM 2's image encoder is the expensive part of every frame and does not depend on prompts or on
the memory bank, so its output is computed once per frame and reused by every object, every click
and every re-propagation while it stays in the cache. The cache holds at most ``max_frames``
frames and drops the least recently used one (transformers' own cache keeps one frame and drops
the lowest frame index, which is the wrong one when tracking backwards).

It implements the three methods transformers' ``Sam2VideoModel`` calls on
``inference_session.cache``.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["FeatureCache"]


class FeatureCache:
    """Least-recently-used store of per-frame vision features.

    Parameters
    ----------
    max_frames : int
        How many frames' features to keep (about 32 MB per frame for 1024 px models, 2 MB at
        256 px).
    """

    def __init__(self, max_frames: int = 8):
        if max_frames < 1:
            raise ValueError("the feature cache must hold at least one frame")
        self.max_frames = int(max_frames)
        self._features: OrderedDict[int, dict] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._features

    def get_vision_features(self, frame_idx: int) -> dict | None:
        feats = self._features.get(frame_idx)
        if feats is None:
            self.misses += 1
            return None
        self.hits += 1
        self._features.move_to_end(frame_idx)
        return feats

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self._features[frame_idx] = features
        self._features.move_to_end(frame_idx)
        while len(self._features) > self.max_frames:
            self._features.popitem(last=False)

    def clear_all(self) -> None:
        self._features.clear()
