"""Propagation from the dock: the engine's frames stream into the labels without stalling.

In the worker: the engine tracks a frame, and the frame's masks are cropped to the box that
changes (:meth:`Annotator.prepare`, a read of the labels). On the GUI thread: the crop is
painted (a few thousand pixels for a cell, whatever the frame size) and shown only if it is the
frame on screen, at a bounded rate (:class:`~napari_sam2._qt.labels_view.LabelsView`); the
progress bar too (:class:`~napari_sam2._qt.sections.ProgressLine`).
Cancel stops the engine after the frame it is computing; finished frames stay. Revert puts the
labels back as they were before the last run, in the worker too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_sam2._qt.sections import counted, listed
from napari_sam2.label_edits import EditRun

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["PropagationPanel"]


class PropagationPanel(DockHost):
    """The Propagate section of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    def _selected_for_propagation(self, session) -> list[int]:
        """The objects selected in the list ("selected only"), each with a prompt to start from."""
        chosen = self.selected_ids()
        if not chosen:
            raise ValueError("no object is selected: select one in the list (or untick 'selected only')")
        bare = [self.objects.get(i, f"object {i}") for i in chosen if i not in session.objects]
        if bare:
            one = len(bare) == 1
            raise ValueError(f"{listed(bare)} {'has' if one else 'have'} no prompt yet: click on "
                             f"{'it' if one else 'them'} first (or untick 'selected only')")
        return chosen

    def propagate(self):
        """Propagate all (or the selected) objects in a worker; results stream into the labels."""
        session = self.ensure_session()
        core, layout = self.core, self.stack_layout  # this run's, whatever happens meanwhile
        assert layout is not None  # ensure_session sets it
        # said, not alerted: Shift-P pressed at such a moment harms nothing
        if layout.is_single_image:
            return self.say("this is a single image: its masks are final, there is nothing to propagate")
        if self.tasks.busy:
            return self.say("wait for the running task to finish (or press Cancel)")
        obj_ids = self._selected_for_propagation(session) if self.selected_only.isChecked() else None
        direction, start = self.direction_combo.currentText(), self.start_spin.value()
        last = self.stop_spin.value()  # included; -1 ("last"): the end of the stack
        stop = None if last < 0 else last + 1
        # objects prompted on different frames are carried forward and backward in turn, so a
        # frame may come twice (once per group): the bar and the messages count frames, once
        total = len(set(session.plan_propagation(direction, start, stop, obj_ids)))
        if not total:
            return self.say(f"no {self.unit} to propagate: '{direction}' from the prompts leaves the range "
                            f"{start}–{'last' if last < 0 else last}; change the direction or the range")
        unit = self.unit
        run = EditRun("propagation")
        seen: set[int] = set()  # frames painted so far (the bar counts each once)
        self.progress.start(total, unit)
        self.cancel_button.setEnabled(True)
        self.propagate_button.setEnabled(False)
        self._cancel = False
        self.say(f"propagating {counted(total, unit)}…")

        def work():
            # each frame's write is prepared in a second thread while the engine tracks the next
            # frame (numpy and torch leave Python's lock while they work): on large frames the
            # preparation costs a good part of a frame's tracking, and the two overlap
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1, thread_name_prefix="napari-sam2 label writes") as writes:
                pending = None
                for frame, masks in session.propagate(direction, start, stop, obj_ids):
                    job = writes.submit(core.prepare, frame,
                                        dict(masks.items()) if hasattr(masks, "items") else masks,
                                        getattr(masks, "boxes", None), layout)
                    if pending is not None:
                        yield pending.result()
                    pending = job
                    if self._cancel:
                        break
                if pending is not None:
                    yield pending.result()

        def on_frame(write):
            edit = core.apply(write)
            if edit is not None:
                run.edits.append(edit)
                self._show(edit, now=False)
            if write.frame not in seen:
                seen.add(write.frame)
                self.progress.step()

        def finished():
            self.view.flush()
            self.progress.show_count()
            core.push_run(run)
            self.cancel_button.setEnabled(False)
            self.propagate_button.setEnabled(True)
            done = self.progress.done
            clock = self.progress.clock
            rate = f" at {clock.text(unit).split(' · ')[1]}" if clock is not None and clock.rate > 0 else ""
            if done < total:  # the bar no longer counts down
                why = "cancelled" if self._cancel else "stopped"
                self.progress.setFormat(f"{done} / {total} {unit} · {why}")
            if self._cancel and done < total:
                self.say(f"cancelled ({done} of {total} {unit}); the finished {unit} stay")
            elif not (self.status.is_error and done < total):  # else the error is on the status line
                self.say(f"propagated {counted(done, unit)}{rate}")
            self._update_quality()

        # the dock's own bar shows the run: napari's activity-dock bar processes Qt's events
        # (a repaint of the window) at every frame, holding the lock the worker needs
        self.tasks.submit(work, None, on_yield=on_frame, on_finish=finished)

    def cancel(self):
        """Stop the propagation after the current frame; finished frames stay."""
        self._cancel = True
        if self.session is not None and hasattr(self.session, "cancel"):
            # the engine stops after the frame it is computing and the run ends by itself,
            # painting every frame the engine finished (quitting napari's worker would drop
            # the frame whose write is still being prepared)
            self.session.cancel()
        else:
            self.tasks.quit()

    def revert_last_run(self):
        """Put the labels back exactly as they were before the last propagation run.

        The run leaves the history at once; its pixels are put back in the worker (a masked copy
        per frame), then the labels are redrawn.
        """
        if self.cancel_button.isEnabled():  # a run is going: stop it, then revert that run
            self.cancel()
            self.say("stopping the propagation to revert it…")
            self.tasks.submit(lambda: None, lambda _: self.revert_last_run())
            return None
        run = self.core.take_last_run()
        if run is None:
            self.say("no propagation run to revert")
            return None
        n = len(self.core.frames_of(run))

        def done(_):
            current = self.core.labels
            self._show_edits(run.edits)
            # a run written into another Labels layer (the target was changed since) went back there
            elsewhere = self.layers_holding([a for a in run.targets if a is not current])
            where = f" in '{elsewhere[0].name}'" if elsewhere else ""
            self.say(f"reverted the last propagation: {counted(n, self.unit)}{where} back as they "
                     "were (the tracking stays in the session: Propagate redoes it)")
            self._update_quality()

        self.tasks.submit(lambda: self.core.undo_run(run), done)
        return run
