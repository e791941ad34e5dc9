"""Objects from a Labels layer: a label as a mask prompt, every label as an object, or SAM 2's own.

One label can prompt the active object, every label can become an object, or SAM 2's own
automatic masks on this frame go into a layer to review first.

A painted mask, a Cellpose or StarDist result: "Use as mask" prompts the active object with one
of its labels, "Seed from labels" makes every label of the current frame an object with the same
id, and "Find objects" (on the frame shown) fills a "SAM 2 found objects" layer to edit before seeding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_sam2._qt.sections import counted

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["LabelSeeds", "FOUND_LAYER"]

FOUND_LAYER = "SAM 2 found objects"


class LabelSeeds(DockHost):
    """The Objects section's seeding buttons of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    def _seed_plane(self, hint: str):
        """The chosen seed layer's plane on the current frame: ``(session, frame, name, plane)``."""
        name = self.mask_source.currentText()
        if name not in self.viewer.layers:
            raise ValueError(f"choose a Labels layer holding the {hint}")
        session = self.ensure_session()
        lay = self.stack_layout
        assert lay is not None  # ensure_session sets it
        frame = self.current_frame()
        plane = np.asarray(self.viewer.layers[name].data[lay.index(frame)])
        if plane.shape != tuple(session.frame_shape):
            raise ValueError(f"'{name}' does not have the image's shape: choose a Labels layer of this stack")
        return session, frame, name, plane

    def mask_from_labels(self):
        """Prompt the active object with an object of the chosen Labels layer on this frame."""
        _, frame, name, plane = self._seed_plane("seed mask (Objects ▸ Use as mask)")
        obj_id = self.ensure_active()
        source_id = self.mask_id.value() or obj_id
        seed = plane == source_id
        if not seed.any():
            raise ValueError(f"label {source_id} is not in '{name}'{self.on_frame(frame)}")
        replaced = self.prompts.record_mask(frame, obj_id)
        self.run_prompt(frame, obj_id, lambda s: s.add_mask(frame, obj_id, seed), "mask",
                        then=lambda: replaced.update(self.prompts.set_aside_clicks(frame, [obj_id])))

    def seed_from_labels(self):
        """Turn every label of the chosen Labels layer on this frame into an object (ids kept)."""
        session, frame, name, plane = self._seed_plane("objects (Objects ▸ Seed from labels)")
        if not plane.any():
            raise ValueError(f"'{name}' has no labels{self.on_frame(frame)}")
        core, layout = self.core, self.stack_layout

        def work():
            ids = session.add_label_image(frame, plane)
            masks = {i: core.engine_mask(frame, i, session) for i in ids}
            return ids, core.prepare(frame, masks, layout=layout)

        def done(result):
            ids, write = result
            self._add_object_items([(i, f"object {i}") for i in ids if i not in self.objects])
            self.prompts.record_mask(frame, ids).update(self.prompts.set_aside_clicks(frame, ids))
            self._show(core.commit(write, "seed"))
            self._update_quality()
            self.say(f"seeded {counted(len(ids))} from '{name}'{self.on_frame(frame)} "
                     f"(ids {', '.join(map(str, ids[:6]))}{'…' if len(ids) > 6 else ''})")

        self.tasks.submit(work, done)

    def find_objects(self, points_per_side: int | None = None):
        """Find the objects on this frame (SAM 2's automatic masks) into a Labels layer to review.

        Nothing becomes an object yet: edit the layer if needed (erase, merge, paint), then
        press "Seed from labels" with it. The grid, zoom-ins and smallest area are the
        "more (finding objects)" settings (``points_per_side`` overrides the grid). A frame of
        the review layer that already holds found objects (maybe reviewed) is kept: the new
        ones go into a new layer.
        """
        grid = int(points_per_side or self.find_grid.value())
        zoom, min_area = int(self.find_zoom.value()), int(self.find_min_area.value())
        session = self.ensure_session()
        frame = self.current_frame()
        lay, img = self.stack_layout, self.image_layer  # as they are now, whatever happens meanwhile
        assert lay is not None  # ensure_session sets it
        self.say(f"finding objects{self.on_frame(frame)}… (Cancel stops it)")
        self._cancel = False
        self.cancel_button.setEnabled(True)

        class Stopped(Exception):
            pass

        def stop_if_asked(done, total):  # called by the engine after every decoder batch
            if self._cancel:
                raise Stopped

        def work():
            try:
                return session.segment_everything(frame, points_per_side=grid, crop_n_layers=zoom,
                                                  min_area=min_area, progress=stop_if_asked)
            except Stopped:
                return None

        def finished():
            self.cancel_button.setEnabled(False)  # (Propagate waits for this task: no run to stop)

        def done(found):
            if found is None:
                return self.say(f"finding objects{self.on_frame(frame)} cancelled: nothing changed")
            layers = self.viewer.layers
            index = lay.index(frame)
            earlier = layers[FOUND_LAYER] if FOUND_LAYER in layers else None
            if earlier is not None and earlier.data.shape == lay.labels_shape \
                    and not np.asarray(earlier.data[index]).any():
                layer, kept = earlier, ""
            else:  # none yet, or this frame's found (maybe reviewed) objects stay as they are
                layer = self.viewer.add_labels(
                    np.zeros(lay.labels_shape, found.dtype if found.dtype.itemsize >= 2 else np.uint16),
                    name=FOUND_LAYER, scale=img.scale[:lay.ndim], translate=img.translate[:lay.ndim],
                    opacity=0.5)
                kept = "" if earlier is None else f"; the earlier ones stay in '{earlier.name}'"
                if earlier is not None:
                    earlier.visible = False
            layer.data[index] = found
            layer.refresh()
            self._refresh_layer_choices()
            self.mask_source.setCurrentText(layer.name)
            n = len(np.unique(found[found > 0]))
            self.prompts.select_points()
            self.say(f"found {counted(n)}{self.on_frame(frame)} in '{layer.name}': review them, "
                     f"then press Seed from labels{kept}")

        self.tasks.submit(work, done, progress="SAM 2: finding objects", on_finish=finished)
