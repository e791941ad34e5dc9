"""Loading a model from the dock: in a worker, with progress in the activity dock and the dock."""

from __future__ import annotations

from pathlib import Path

__all__ = ["load_in_worker"]


def load_in_worker(dock, then=None) -> None:
    """Load the dock's chosen model in a worker; ``dock._model_loaded`` receives it.

    ``napari_sam2.load_model`` blocks and reports progress through a callback; it runs in a
    helper thread whose reports come back through a queue, so that the worker (a generator)
    yields them to the GUI thread.
    """
    from napari.utils import progress as activity_progress

    source = dock.model_path.text().strip() or dock.size_combo.currentText()
    device = dock.device_combo.currentText()
    previous_status = dock.model_status.text()
    dock.model_status.setText(f"loading {source}…")
    dock.load_button.setEnabled(False)
    dock.say(f"loading {source}…")
    bar = activity_progress(total=0, desc=f"Loading {Path(str(source)).name}")
    dock.model_progress = []  # (done, total, message) as reported, for the status line

    def work():
        import queue
        import threading

        from napari_sam2 import load_model

        reports: queue.Queue = queue.Queue()
        out: dict = {}

        def run():
            try:
                out["model"] = load_model(source, device=device, progress=lambda *r: reports.put(r))
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
        done, total, message = report
        dock.model_progress.append(report)
        if total > 0 and bar.total != total:
            bar.total = total
        bar.n = min(done, total) if total > 0 else done
        bar.update(0)  # emits the new value to the activity dock
        if message:
            bar.set_description(message)
        percent = f" {100 * done / total:.0f} %" if total > 0 else ""
        dock.model_status.setText(f"{message or 'loading'}{percent}")

    loaded = []

    def done(model):
        loaded.append(model)
        dock._model_loaded(model, source)
        if then is not None:
            then()

    def finished():
        bar.close()
        dock.load_button.setEnabled(True)
        if not loaded:  # failed: the status line says why; the previous model stays
            dock.model_status.setText(previous_status if dock.model is not None else "no model loaded")

    dock.tasks.submit(work, done, on_yield=on_progress, on_finish=finished)
