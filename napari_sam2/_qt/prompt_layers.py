"""The dock's prompt layers: a Points layer for clicks and a Shapes layer for boxes.

Points carry two features: ``obj_id`` (the object the click belongs to) and ``positive``
(green: on the object, red: background). Whenever the Points layer changes, its points are
grouped by (frame, object) and compared with what the engine was last given for that group:

* points only added → the new clicks are sent as refinement clicks (``add_points``);
* points deleted or moved → the frame's clicks are sent again as one prompt (``replace=True``);
* all points of a group deleted → ``clear_prompts``.

Coordinates go world → image data through napari (``data_to_world`` / ``world_to_data``), so
scale, translate and anisotropic voxels are respected.

Markers keep a fixed size on screen (points between 8 and 14 screen pixels, box edges 2 screen
pixels at any zoom), so a 30 px cell on a 6000 px frame is not hidden under its click.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sam2.conversions import points_in_frame
from napari_sam2.prompts import prompts_in_effect

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
    from napari_sam2.engine.session import Sam2Session
    from napari_sam2.stack_layout import StackLayout

__all__ = ["PromptLayers"]

POSITIVE, NEGATIVE = "lime", "red"
#: diameter of a click marker on screen (min, max pixels), whatever the zoom
POINT_SCREEN_PX = (8.0, 14.0)
#: width of a box edge on screen, in pixels
BOX_EDGE_SCREEN_PX = 2.0


class PromptLayers:
    """Keeps the prompt layers and the engine's prompts in step."""

    def __init__(self, dock: DockHost) -> None:
        self.dock = dock
        self.points: Any = None  # napari Points / Shapes layers (napari ships no types), made on demand
        self.shapes: Any = None
        self.positive = True
        self._sent: dict[tuple[int, int], list] = {}
        # ("points", key, sent_before) | ("box", key, clicks_replaced) | ("mask", keys, clicks_replaced)
        self._history: list[tuple] = []
        self._suspend = False

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        """Change the layers without their change events reaching the engine (they show it)."""
        self._suspend = True
        try:
            yield
        finally:
            self._suspend = False

    # ------------------------------------------------------------------ layers
    def ensure_layers(self):
        viewer = self.dock.viewer
        img = self.dock.image_layer
        nd = self._layout().ndim
        geo = {"scale": img.scale[:nd], "translate": img.translate[:nd],
               "axis_labels": tuple(img.axis_labels[:nd]), "units": tuple(img.units[:nd])}
        if self.points is None or self.points not in viewer.layers:
            self.points = viewer.add_points(
                np.empty((0, nd)), ndim=nd, name="SAM 2 points", size=max(3, min(img.data.shape[-2:]) // 40),
                features={"obj_id": np.zeros(0, int), "positive": np.zeros(0, bool)},
                face_color=POSITIVE, border_color="white", canvas_size_limits=POINT_SCREEN_PX, **geo,
            )
            self.points.events.data.connect(self._points_changed)
            self.points.events.set_data.connect(self._hide_placeholder)
            self._hide_placeholder()
        if self.shapes is None or self.shapes not in viewer.layers:
            self.shapes = viewer.add_shapes(
                ndim=nd, name="SAM 2 boxes", edge_color="yellow", face_color="transparent",
                edge_width=self._edge_width(), **geo,
            )
            self.shapes.events.data.connect(self._shapes_changed)
            self._camera().events.zoom.connect(self._zoomed)
        self._set_defaults()
        self.select_points()

    def select_points(self):
        """Make the Points layer the active one, in add mode: the next click is a prompt."""
        self.dock.viewer.layers.selection.active = self.points
        self.points.mode = "add"

    def _hide_placeholder(self, event=None):
        """Draw nothing where no click is in view (a slice without points).

        With no point on the slice shown, napari hands the canvas one placeholder point of size
        0 at the origin; the markers' minimum screen size would draw it as a white dot at the
        image's corner. The minimum holds only while some point is in view.
        """
        layer = self.points
        want = POINT_SCREEN_PX if self._points_in_view() else (0.0, POINT_SCREEN_PX[1])
        if tuple(layer.canvas_size_limits) != want:
            layer.canvas_size_limits = want

    def _points_in_view(self) -> bool:
        """Whether a point of the Points layer lies on the slice the viewer shows."""
        layer, dims = self.points, self.dock.viewer.dims
        if not len(layer.data):
            return False
        offset = dims.ndim - layer.ndim
        hidden = [d - offset for d in dims.not_displayed if d >= offset]
        if not hidden:
            return True
        here = np.asarray(layer.world_to_data(dims.point[offset:]), float)[hidden]
        return bool(np.any(np.all(np.abs(np.asarray(layer.data)[:, hidden] - here) < 0.5, axis=1)))

    def _camera(self):
        viewer = self.dock.viewer
        scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
        return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera

    def _edge_width(self) -> float:
        """Data units that make BOX_EDGE_SCREEN_PX screen pixels at the current zoom."""
        img = self.dock.image_layer
        zoom = float(self._camera().zoom) or 1.0
        step = float(np.min(np.abs(img.scale[-2:]))) if img is not None else 1.0
        return BOX_EDGE_SCREEN_PX / zoom / step

    def _zoomed(self, event=None):
        if self.shapes is None or self.shapes not in self.dock.viewer.layers:
            return
        width = self._edge_width()
        self.shapes.current_edge_width = width
        if self.shapes.nshapes:
            self.shapes.edge_width = [width] * self.shapes.nshapes

    def _set_defaults(self):
        if self.points is None:
            return
        self.points.feature_defaults = {"obj_id": self.dock.active_id or 0, "positive": self.positive}
        # napari also recolours the selected points with the current colour: select none first
        self.points.selected_data = set()
        self.points.current_face_color = POSITIVE if self.positive else NEGATIVE

    def set_active(self, obj_id):
        self._set_defaults()

    def set_polarity(self, positive: bool):
        self.positive = bool(positive)
        self._set_defaults()

    def disconnect(self):
        for layer, slot in ((self.points, self._points_changed), (self.shapes, self._shapes_changed)):
            if layer is not None:
                layer.events.data.disconnect(slot)
        if self.points is not None:
            self.points.events.set_data.disconnect(self._hide_placeholder)
        if self.shapes is not None:
            self._camera().events.zoom.disconnect(self._zoomed)

    # ------------------------------------------------------------------ coordinates
    def _layout(self) -> StackLayout:
        """The session's stack layout, which maps the layers' points onto frames.

        Prompts are read and drawn only while there is a session: right after ``ensure_session``,
        or for an undo or a replay of the current session (a session's end clears the undo
        history, and the dock drops a replay that outlived its session).
        """
        lay = self.dock.stack_layout
        assert lay is not None, "prompts are mapped onto frames only while there is a session"
        return lay

    def _image_coords(self, layer, coords) -> np.ndarray:
        img, lay = self.dock.image_layer, self._layout()
        return np.asarray(img.world_to_data(layer.data_to_world(coords)), dtype=float)[-lay.ndim:]

    def _to_image(self, layer, coords):
        """Layer data coordinates -> (on this stack, frame, row, col) of the image data."""
        data = self._image_coords(layer, coords)
        lay = self._layout()
        return lay.on_this_stack(data), *lay.split(data)

    def _from_image(self, frame, row, col):
        lay = self._layout()
        c = np.zeros(lay.ndim)
        for a, i in enumerate(lay.index(frame)):
            if not isinstance(i, slice):
                c[a] = i
        c[-2:] = row, col
        return c

    # ------------------------------------------------------------------ points
    def _points_changed(self, event=None):
        action = str(getattr(event, "action", "added")).lower()
        if self._suspend or not any(a in action for a in ("added", "removed", "changed")):
            return
        try:
            session = self.dock.ensure_session()
        except ValueError as err:
            return self.dock._error(err)
        if "added" in action and len(self.points.data):
            on_stack, frame, row, col = self._to_image(self.points, self.points.data[-1])
            if not on_stack:
                lay = self._layout()
                a = lay.other_axes[0]
                where = int(round(self._image_coords(self.points, self.points.data[-1])[a]))
                return self._refuse_last_click(
                    f"this click is at index {where} of {self.dock.fixed_label.text()}, but the session "
                    f"tracks index {lay.fixed.get(a, 0)} of that axis: tick 'follow' (Image) "
                    "or set the index there")
            if not points_in_frame([(row, col)], session.frame_shape).all():
                return self._refuse_last_click(f"a click{self.dock.on_frame(frame)} lies outside the "
                                               "image: it is ignored")
        self.sync_points(session)

    def _refuse_last_click(self, why: str):
        """Take the click just added off the layer (the engine never gets it) and say why."""
        with self._quietly():
            self.points.selected_data = {len(self.points.data) - 1}
            self.points.remove_selected()
        self._set_defaults()
        self.dock._error(ValueError(why))

    def _groups(self) -> dict[tuple[int, int], list[tuple[float, float, int]]]:
        feats = self.points.features
        if len(self.points.data) and (feats["obj_id"] == 0).any():
            # clicks made before any object existed start one
            obj_id = self.dock.ensure_active()
            ids = feats["obj_id"].to_numpy().copy()
            ids[ids == 0] = obj_id
            self.points.features["obj_id"] = ids
        groups: dict[tuple[int, int], list] = {}
        for p, obj_id, pos in zip(self.points.data, self.points.features["obj_id"],
                                  self.points.features["positive"]):
            on_stack, frame, row, col = self._to_image(self.points, p)
            if on_stack:
                groups.setdefault((frame, int(obj_id)), []).append((row, col, int(bool(pos))))
        return groups

    def sync_points(self, session: Sam2Session):
        """Send ``session`` (the dock's) what changed in the Points layer since the last call."""
        groups = self._groups()
        for key in sorted(set(groups) | set(self._sent)):
            cur, old = groups.get(key, []), self._sent.get(key, [])
            if cur == old:
                continue
            frame, obj_id = key
            if not 0 <= frame < session.n_frames:
                continue
            inside = points_in_frame([c[:2] for c in cur], session.frame_shape) if cur else np.zeros(0, bool)
            if not inside.all():
                self.dock._error(ValueError(
                    f"a click on frame {frame} lies outside the image: it is ignored"))
                cur = [c for c, ok in zip(cur, inside) if ok]
                if cur == old:
                    continue
            self._history.append(("points", key, list(old)))
            self._sent[key] = cur
            if old and cur[: len(old)] == old:
                call = self._add(frame, obj_id, cur[len(old):], replace=False)
            elif cur:
                call = self._add(frame, obj_id, cur, replace=bool(old))
            else:
                def call(s, frame=frame, obj_id=obj_id):
                    if obj_id in s.objects and frame in s.prompted_frames(obj_id):
                        s.clear_prompts(frame, obj_id)
            self.dock.run_prompt(frame, obj_id, call, "click")

    @staticmethod
    def _add(frame, obj_id, clicks, replace):
        pts = [c[:2] for c in clicks]
        labels = [c[2] for c in clicks]
        return lambda s: s.add_points(frame, obj_id, pts, labels, replace=replace)

    def forget_sent(self):
        """A new engine session: every point will be sent again on the next change."""
        self._sent.clear()
        self._history.clear()

    def mark_all_sent(self):
        """The engine already has every prompt in the layers (after a replay)."""
        if self.points is not None:
            self._sent = self._groups()

    # ------------------------------------------------------------------ boxes
    def _shapes_changed(self, event=None):
        action = str(getattr(event, "action", "added")).lower()
        if self._suspend or "added" not in action:
            return
        try:
            self.dock.ensure_session()
        except ValueError as err:
            return self.dock._error(err)
        corners = [self._to_image(self.shapes, v) for v in self.shapes.data[-1]]
        frame = corners[0][1]
        rc = np.array([c[2:] for c in corners])
        box = [rc.min(axis=0).tolist(), rc.max(axis=0).tolist()]
        obj_id = self.dock.ensure_active()
        replaced: dict = {}
        self._history.append(("box", (frame, obj_id), replaced))
        self.dock.run_prompt(frame, obj_id, lambda s: s.add_box(frame, obj_id, box), "box",
                             then=lambda: replaced.update(self.set_aside_clicks(frame, [obj_id])))

    # ------------------------------------------------------------------ undo and sessions
    def record_mask(self, frame, obj_ids) -> dict:
        """Note a mask prompt (one object, or a seeding's objects) for Undo.

        Returns the dict in which :meth:`set_aside_clicks`'s result is kept once the engine
        has taken the mask (the clicks it replaced come back on Undo).
        """
        replaced: dict = {}
        ids = [int(i) for i in np.atleast_1d(obj_ids)]
        self._history.append(("mask", [(frame, i) for i in ids], replaced))
        return replaced

    def set_aside_clicks(self, frame, obj_ids) -> dict:
        """Take the objects' clicks on ``frame`` off the Points layer: a box or a mask replaced them.

        The engine reads only the frame's box or mask now (clicks added later refine it), so the
        layer shows only what counts, as a loaded session does; and deleting one of those old
        clicks would otherwise send the others as the frame's prompt, in place of the mask.
        Returns the clicks set aside, ``{(frame, obj_id): [(row, col, label), ...]}``.
        """
        ids = {int(i) for i in obj_ids}
        if self.points is None or not len(self.points.data):
            return {}
        gone: dict[tuple[int, int], list] = {}
        keep = []
        feats = self.points.features
        for i, (p, obj_id, pos) in enumerate(zip(self.points.data, feats["obj_id"], feats["positive"])):
            on_stack, f, row, col = self._to_image(self.points, p)
            if on_stack and f == frame and int(obj_id) in ids:
                gone.setdefault((f, int(obj_id)), []).append((row, col, int(bool(pos))))
            else:
                keep.append(i)
        if not gone:
            return {}
        with self._quietly():
            self._replace_points(keep, [])
        for key in gone:
            self._sent.pop(key, None)
        return gone

    def after_undo(self, frame, obj_id, session: Sam2Session | None = None):
        """Make the layers show what the engine has after ``Sam2Session.undo()``.

        An undo reaching past what was prompted here (into prompts a session file or a
        re-read replayed) redraws every prompt from ``session``.
        """
        if not self._history:
            if session is not None:
                self._redraw_from(session)
            return
        entry = self._history.pop()
        with self._quietly():
            if entry[0] == "points":
                key, before = entry[1], entry[2]
                self._sent[key] = before
                keep = [i for i, (p, o) in enumerate(zip(self.points.data, self.points.features["obj_id"]))
                        if not (int(o) == key[1] and self._to_image(self.points, p)[1] == key[0])]
                self._replace_points(keep, [(key[0], key[1], c) for c in before])
            elif entry[0] == "box" and len(self.shapes.data):
                self.shapes.selected_data = {len(self.shapes.data) - 1}
                self.shapes.remove_selected()
            if entry[0] in ("box", "mask") and entry[2]:  # the clicks the box or mask replaced
                self._replace_points(range(len(self.points.data)),
                                     [(k[0], k[1], c) for k, clicks in entry[2].items() for c in clicks])
                self._sent.update({k: list(clicks) for k, clicks in entry[2].items()})

    def _redraw_from(self, session: Sam2Session):
        """Draw exactly the clicks and boxes ``session`` holds (boxes carry no object: all redrawn)."""
        self.ensure_layers()
        with self._quietly():
            if len(self.shapes.data):
                self.shapes.selected_data = set(range(len(self.shapes.data)))
                self.shapes.remove_selected()
            self._replace_points([], [])
        self._sent.clear()
        self.show_prompts({i: session.prompts(i) for i in session.objects})

    def _replace_points(self, keep, extra):
        data = [self.points.data[i] for i in keep]
        ids = [int(self.points.features["obj_id"][i]) for i in keep]
        pos = [bool(self.points.features["positive"][i]) for i in keep]
        for frame, obj_id, (row, col, label) in extra:
            data.append(self._from_image(frame, row, col))
            ids.append(obj_id)
            pos.append(bool(label))
        # the layer's own dimensionality (it was made for the session's layout): objects are
        # also deleted when there is no session (e.g. after the image was removed)
        nd = self.points.ndim
        self.points.selected_data = set()
        self.points.data = np.asarray(data, float).reshape(-1, nd)
        self.points.features = {"obj_id": np.asarray(ids, int), "positive": np.asarray(pos, bool)}
        self.points.face_color = [POSITIVE if p else NEGATIVE for p in pos] or POSITIVE
        self._set_defaults()

    def remove_object(self, obj_id):
        if self.points is None:
            return
        with self._quietly():
            keep = [i for i, o in enumerate(self.points.features["obj_id"]) if int(o) != obj_id]
            self._replace_points(keep, [])
        self._sent = {k: v for k, v in self._sent.items() if k[1] != obj_id}

    def show_session_prompts(self, sf):
        """Draw a loaded session's clicks and boxes (the engine has them already)."""
        self.show_prompts({obj.id: obj.prompts for obj in sf.objects})
        self.mark_all_sent()

    def show_prompts(self, prompts_of: dict):
        """Draw objects' clicks and boxes, ``{obj_id: [Prompt, ...]}``, that the engine has.

        Only the prompts that still count are drawn (a box, a mask or ``replace`` clicks hide
        the frame's earlier ones), so the layers show what the engine holds.
        """
        self.ensure_layers()
        with self._quietly():
            extra = []
            for obj_id, prompts in prompts_of.items():
                for p in prompts_in_effect(prompts):
                    # a points prompt has its points and labels, a box prompt its box
                    if p.kind == "points":
                        extra += [(p.frame, obj_id, (float(r), float(c), int(label)))
                                  for (r, c), label in zip(np.asarray(p.points), np.asarray(p.labels))]
                    elif p.kind == "box":
                        (r0, c0), (r1, c1) = np.asarray(p.box)
                        corners = ((r0, c0), (r0, c1), (r1, c1), (r1, c0))
                        rect = [self._from_image(p.frame, r, c) for r, c in corners]
                        self.shapes.add_rectangles(np.asarray(rect))
            keep = [i for i, o in enumerate(self.points.features["obj_id"]) if int(o) not in prompts_of]
            self._replace_points(keep, extra)
        self._sent.update({k: v for k, v in self._groups().items() if k[1] in prompts_of})
