"""Loading a model from the dock: in a worker, with progress in the activity dock and the dock."""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QFileDialog

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
    from napari_sam2.engine.models import Sam2Model
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["ModelLoading"]

# seconds between two updates of the loading bars (a download reports every chunk)
_SHOW_EVERY = 0.1


class ModelLoading(DockHost):
    """The Model section of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    def _browse_model(self):
        start = self.model_path.text().strip() or str(Path.home())  # not the working directory
        path, _ = QFileDialog.getOpenFileName(self._dialog_parent(), "SAM 2 checkpoint", start,
                                              "Checkpoints (*.pt *.pth *.safetensors *.json)")
        if path:
            self.model_path.setText(str(Path(path).parent if path.endswith(".json") else path))

    def load_chosen_model(self, then=None, session_precision: str | None = None) -> None:
        """Load the model chosen in the dock in a worker; then the prompt layers are ready.

        Download and loading progress goes to a bar in napari's activity dock and to the model
        line; ``then`` is called on the GUI thread once the model is there (not after a failure).
        ``session_precision`` (a loaded session's) is used instead of the precision row when the
        device can run it at speed (checked in the worker: it needs torch), and the row then shows
        it. A precision the device computes without arithmetic units for it (bfloat16 on most
        CPUs, ~9x slower than float32) gets a warning that says what to choose instead.
        ``napari_sam2.load_model`` blocks and reports progress through a callback: it runs in a
        helper thread whose reports come back through a queue, so that the worker (a generator)
        yields them to the GUI thread.
        """
        from napari.utils import progress as activity_progress

        source = self.model_path.text().strip() or self.model_combo.currentText()
        device = self.device_combo.currentText()
        precision = self.precision_combo.currentText()
        previous_status = self.model_status.text()
        self.model_status.setText(f"loading {source}…")
        self.load_button.setEnabled(False)
        self.say(f"loading {source}…")
        bar = activity_progress(total=0, desc=f"Loading {Path(str(source)).name}")
        self.model_progress = []  # (done, total, message) as reported, for the status line
        loaded: list = []  # the model, once it is there
        used = {"precision": precision}
        shown = [0.0]  # when the bars were last updated

        def work() -> Generator[tuple[int, int, str], None, Sam2Model]:
            import gc
            import queue
            import threading

            from napari_sam2 import load_model

            reports: queue.Queue[tuple[int, int, str] | None] = queue.Queue()
            out: dict[str, Any] = {}

            def run():
                try:
                    from napari_sam2.engine.devices import precision_note, replay_precision

                    chosen, note = replay_precision(session_precision, precision, device)
                    used["precision"] = chosen
                    if note is None:  # the user's own choice, or the session's: said if slow here
                        slow = precision_note(chosen, device)
                        note = None if slow is None else f"precision {chosen}: {slow}"
                    if note is not None:
                        used["note"] = note
                    out["model"] = load_model(source, device=device, dtype=used["precision"],
                                              progress=lambda *r: reports.put(r))
                    # Python's full garbage collection runs once the objects created since the
                    # last one reach a quarter of all (napari's, torch's, transformers' ~700 k):
                    # loading the model brings it close, and it would then fall in the middle
                    # of a propagation, holding the GIL (and so the window) for ~0.4 s. It runs
                    # here instead, while the user waits for the model anyway.
                    reports.put((0, 0, "Tidying up memory"))
                    gc.collect()
                except BaseException as err:  # noqa: BLE001 - re-raised in the worker below
                    out["error"] = err
                finally:
                    reports.put(None)

            threading.Thread(target=run, name="napari-sam2 model loading", daemon=True).start()
            while (report := reports.get()) is not None:
                yield report
            if "error" in out:
                raise out["error"]
            return out["model"]

        def on_progress(report):
            if loaded:  # a report delivered after the model arrived must not hide "... on cpu"
                return
            done, total, message = report
            self.model_progress.append(report)
            now = time.monotonic()
            if now - shown[0] < _SHOW_EVERY and not (total > 0 and done >= total):
                return  # napari's bar processes Qt's events at each update: a few a second
            shown[0] = now
            percent = f" {100 * done / total:.0f} %" if total > 0 else ""
            # first: the bar's updates below process Qt's events, which may deliver the model
            # (and its "... on cpu" line) before they return
            self.model_status.setText(f"{message or 'loading'}{percent}")
            if total > 0 and bar.total != total:
                bar.total = total
            bar.n = min(done, total) if total > 0 else done
            bar.update(0)  # emits the new value to the activity dock
            if message:
                bar.set_description(message)

        def done(model):
            loaded.append(model)
            if used["precision"] != precision:
                self.precision_combo.setCurrentText(used["precision"])
            self._model_loaded(model, source)
            if "note" in used:  # a warning: the status line is soon overwritten by the replay's
                from napari.utils.notifications import show_warning

                show_warning(used["note"])
            if then is not None:
                then()

        def finished():
            bar.close()
            self.load_button.setEnabled(True)
            if not loaded:  # failed: the status line says why; the previous model stays
                self.model_status.setText(previous_status if self.model is not None else "no model loaded")

        self.tasks.submit(work, done, on_yield=on_progress, on_finish=finished)

    def _model_loaded(self, model, source):
        from napari_sam2.engine.devices import native_precision

        self.model = model
        dtype = model.autocast_dtype
        precision = "" if dtype is None else f" ({str(dtype).replace('torch.', '')})"
        if dtype is not None and native_precision(dtype, model.device) is False:
            # the warning's toast fades; the line stays while the model does
            precision = precision[:-1] + ", emulated here: ~9x slower than float32)"
        self.model_status.setText(f"{Path(str(source)).name} on {model.device}{precision}")
        self._reset_session()
        if self.image_layer is not None:
            self.ensure_session()  # the labels and prompt layers appear: the next click segments
            layout = self.stack_layout
            assert layout is not None  # ensure_session sets it
            self.image_section.set_expanded(False)
            self.model_section.set_expanded(False)
            n = layout.n_frames
            where = f" ({self.unit} 0-{n - 1})" if n > 1 else ""
            self.say(f"model loaded: click on an object to segment it{where}; N for a new object")
        else:
            self.say("model loaded: open an image to segment")
