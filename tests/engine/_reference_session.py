"""A family's own transformers video session, used as transformers' documentation shows.

The parity tests compare the engine with it: every frame preloaded from
``session.source.model_input`` (the frames the engine feeds the network), prompts given as
transformers' processor gives them.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_sam2 import Sam2Session
from napari_sam2.conversions import box_to_model_corners, rowcol_to_model_xy
from napari_sam2.engine.tracking import mask_from_logits


class Reference:
    """The family's own transformers session, all frames preloaded, prompted like its processor."""

    def __init__(self, model, session: Sam2Session):
        self.model = model
        self.s = session
        video = torch.stack([session.source.model_input(t) for t in range(session.n_frames)])
        h, w = session.frame_shape
        cls = session.model.family.inference_session_class()
        self.state = cls(video=video, video_height=h, video_width=w, dtype=torch.float32)
        self.new = []

    def points(self, frame, obj_id, points, labels):
        xy = rowcol_to_model_xy(points, self.s.frame_shape, self.s.model.image_size)
        self._add(frame, obj_id, torch.from_numpy(xy)[None, None],
                  torch.tensor(labels, dtype=torch.int32)[None, None])

    def box(self, frame, obj_id, box):
        xy = box_to_model_corners(box, self.s.frame_shape, self.s.model.image_size)
        corners = torch.tensor([[[2, 3]]], dtype=torch.int32)  # SAM 2's box-corner labels
        self._add(frame, obj_id, torch.from_numpy(xy)[None, None], corners)

    def _add(self, frame, obj_id, coords, labels):
        idx = self.state.obj_id_to_idx(obj_id)
        self.state.add_point_inputs(idx, frame, {"point_coords": coords, "point_labels": labels})
        self.state.remove_mask_inputs(idx, frame)
        self.new.append(obj_id)

    def mask(self, frame, obj_id, mask):
        s = self.s.model.image_size
        m = torch.from_numpy(np.asarray(mask, bool)).float()[None, None]
        m = torch.nn.functional.interpolate(m, size=(s, s), mode="bilinear", align_corners=False,
                                            antialias=True)
        idx = self.state.obj_id_to_idx(obj_id)
        self.state.add_mask_inputs(idx, frame, (m >= 0.5).float())
        self.state.remove_point_inputs(idx, frame)
        self.new.append(obj_id)

    def run_frame(self, frame):
        self.state.obj_with_new_inputs = list(self.new)
        self.new = []
        with torch.inference_mode():
            return self._masks(self.model(self.state, frame_idx=frame))

    def propagate(self, reverse=False):
        for out in self.model.propagate_in_video_iterator(self.state, reverse=reverse):
            yield out.frame_idx, self._masks(out)

    def _masks(self, out):
        shape = self.s.frame_shape
        return {obj_id: mask_from_logits(out.pred_masks[i:i + 1], shape)
                for i, obj_id in enumerate(out.object_ids)}
