"""Propagation from the dock: the engine's frames stream into the labels without stalling.

In the worker: the engine tracks a frame, and the frame's masks are cropped to the box that
changes (:meth:`Annotator.prepare`, a read of the labels). On the GUI thread: the crop is
painted (a few thousand pixels for a cell, whatever the frame size) and shown only if it is the
frame on screen, at a bounded rate (:class:`~napari_sam2._qt.labels_view.LabelsView`).
"""

from __future__ import annotations

from napari_sam2.label_edits import EditRun

__all__ = ["start_propagation"]


def start_propagation(dock) -> None:
    """Start propagating the dock's objects (all, or the selected one) in a worker."""
    session = dock.ensure_session()
    if dock.tasks.busy:
        raise ValueError("wait for the running task to finish (or press Cancel)")
    core = dock.core
    obj_ids = [dock.active_id] if dock.selected_only.isChecked() and dock.active_id else None
    stop = dock.stop_spin.value() or None
    kwargs = dict(direction=dock.direction_combo.currentText(), start=dock.start_spin.value(),
                  stop=stop, obj_ids=obj_ids)
    total = len(session.plan_propagation(**kwargs))
    unit = dock.unit
    run = EditRun("propagation")
    dock.progress.start(total, unit)
    dock.cancel_button.setEnabled(True)
    dock.propagate_button.setEnabled(False)
    dock._cancel = False
    dock.say(f"propagating {total} {unit}…")

    def work():
        for frame, masks in session.propagate(**kwargs):
            yield core.prepare(frame, dict(masks.items()) if hasattr(masks, "items") else masks)
            if dock._cancel:
                return

    def on_frame(write):
        edit = core.apply(write)
        if edit is not None:
            run.edits.append(edit)
            dock._show(edit, now=False)
        dock.progress.step()

    def finished():
        dock.view.flush()
        core.push_run(run)
        dock.cancel_button.setEnabled(False)
        dock.propagate_button.setEnabled(True)
        done = dock.progress.done
        clock = dock.progress.clock
        rate = f" at {clock.text(unit).split(' · ')[1]}" if clock is not None and clock.rate > 0 else ""
        if done < total:  # the bar no longer counts down
            dock.progress.setFormat(f"{done} / {total} {unit} · " + ("cancelled" if dock._cancel else "stopped"))
        if dock._cancel and done < total:
            dock.say(f"cancelled ({done} of {total} {unit}); the finished {unit} stay")
        elif dock.status.is_error and done < total:
            pass  # the error is on the status line already
        else:
            dock.say(f"propagated {done} {unit}{rate}")
        dock._update_quality()

    dock.tasks.submit(work, None, progress={"total": total, "desc": "SAM 2 propagation"},
                      on_yield=on_frame, on_finish=finished)
