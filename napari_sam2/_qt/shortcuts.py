"""The dock's keys on the viewer (N, T, Shift-P, "," and "."), given back when it closes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["SHORTCUTS", "Shortcuts"]

#: key -> (method name, what it does), bound on the viewer while the widget is open
SHORTCUTS = {
    "n": ("new_object", "new object"),
    "t": ("toggle_polarity", "toggle positive / negative clicks"),
    "Shift-P": ("propagate", "propagate"),
    ".": ("next_flagged", "next flagged frame"),
    ",": ("previous_flagged", "previous flagged frame"),
}


class Shortcuts(DockHost):
    """Key bindings of :class:`~napari_sam2._qt.widget.Sam2Widget` on its viewer."""

    def bind_shortcuts(self) -> None:
        """Bind the keys, remembering what each did before (closing the widget puts it back)."""
        # key -> (our handler, the handler it replaced)
        self._bound: dict[str, tuple] = {}
        for key, (method, _) in SHORTCUTS.items():
            handler = self._shortcut(method)
            self._bound[key] = (handler, self.viewer.bind_key(key, handler, overwrite=True))

    def _shortcut(self, method):
        def handler(viewer):
            if self._closed:
                return
            self._guard(getattr(self, method))

        handler.__name__ = f"sam2_{method}"
        return handler

    def unbind_shortcuts(self) -> None:
        """Give the widget's keys back: unbind them, or restore what they did before."""
        from napari.utils.key_bindings import coerce_keybinding

        for key, (handler, previous) in self._bound.items():
            # leave the key alone if something else has been bound to it since
            if self.viewer.keymap.get(coerce_keybinding(key)) is handler:
                self.viewer.bind_key(key, previous, overwrite=True)
        self._bound.clear()
