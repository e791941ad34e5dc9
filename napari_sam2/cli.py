"""The ``napari-sam2`` command: segment a stack from a session file, or open it in napari.

::

    napari-sam2 segment INPUT --prompts SESSION.json --out LABELS.tif [options]
    napari-sam2 segment INPUT --seeds LABELS.tif|--auto-seed N --out LABELS.tif [options]
    napari-sam2 view INPUT [--prompts SESSION.json]
    napari-sam2 batch INPUT... --out-dir DIR --prompts SESSION.json|--seeds-dir DIR|--auto-seed N [options]

Exit status: 0 on success, 2 on bad input or a failed run (one line on stderr naming the
problem), 130 when interrupted with Ctrl-C (SIGINT) and 143 when stopped with SIGTERM (what a
cluster sends at its time limit). Every output path is checked before the model loads, outputs
are renamed into place only when complete, and a run that fails or is interrupted keeps what
finished as ``NAME.partial.tif`` / ``.zarr`` / ``.csv`` while an earlier output stays untouched.
Heavy modules (torch, transformers, napari) are imported only once the input has been checked,
so mistakes are reported in about a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_sam2.errors import CliError, ModelLoadError, one_line

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143

_SEGMENT_EPILOG = """\
INPUT is a TIFF stack (ImageJ, OME, GeoTIFF), a folder of images, a video (mp4, avi, mov, mkv,
webm, gif), a zarr array or OME-Zarr image, or a .npy file.

Output: one label value per object id of the session (0 is background); where objects overlap,
the object with the higher id wins. .tif/.tiff gives an ImageJ hyperstack (uint16, or an
OME-TIFF in uint32 for ids above 65535) with the input's voxel size and, for GeoTIFF input, its
georeferencing; .zarr gives an OME-Zarr image written frame by frame (for stacks larger than
memory). Frames that are not segmented (outside --start/--stop, before the first prompt of a
forward run...) are 0.

Objects come from --prompts, from --seeds (every label id of a label image becomes an object
with that id) or from --auto-seed (every object SAM 2 finds on one frame), or from --prompts
with one of the others.

Settings recorded in the session file (model, axis, channels, contrast) are used unless given
on the command line.

Outputs are written under temporary names and renamed into place only when complete: an
existing output is replaced only by a complete new one, and an existing folder only if
napari-sam2 wrote it. Ctrl-C or SIGTERM stops after the current frame (exit 130 / 143); an
error stops the run (exit 2). Either way what finished is written to NAME.partial.tif / .zarr
(and the statistics to NAME.partial.csv), named in the message, and earlier outputs are kept.
"""


#: ``--precision`` choices (``load_model``'s ``dtype``)
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

#: ``--sample`` names -> napari sample functions in napari_sam2.samples
_SAMPLES = {"cells": "cells_timelapse_sample", "volume": "organ_volume_sample"}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from napari_sam2 import __version__

    parser = argparse.ArgumentParser(
        prog="napari-sam2",
        description="Segment and track objects through image stacks with SAM 2.",
    )
    parser.add_argument("--version", action="version", version=f"napari-sam2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{segment,batch,view}")
    sub.required = True

    seg = sub.add_parser(
        "segment", help="segment a stack from the prompts of a session file",
        description="Replay the prompts of a session file on INPUT, propagate them through the\n"
                    "stack with SAM 2 and write a label image.",
        epilog=_SEGMENT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    seg.add_argument("input", metavar="INPUT", help="image stack to segment")
    seg.add_argument("--prompts", metavar="SESSION.json",
                     help="session file with the objects and their prompts (saved by the widget); "
                          "required unless --seeds or --auto-seed gives the objects")
    seg.add_argument("--out", metavar="LABELS", required=True,
                     help="output labels: .tif/.tiff or .zarr")
    seg.add_argument("--model", metavar="NAME|FOLDER|FILE.pt",
                     help="sam2.1-tiny, sam2.1-small, sam2.1-base-plus, sam2.1-large, sam3 (SAM 3's "
                          "tracker, gated: hf auth login), edgetam (needs napari-sam2[edgetam]), "
                          "a hub id, a transformers model folder or a Meta .pt checkpoint "
                          "(default: the session's model, else sam2.1-tiny)")
    seg.add_argument("--device", default="auto", metavar="auto|cpu|cuda|mps",
                     help="where the model runs (default: auto)")
    seg.add_argument("--precision", choices=PRECISIONS,
                     help="arithmetic precision: auto is bfloat16 on CUDA GPUs that have it, float32 "
                          "elsewhere; bfloat16 also runs on CPUs (about 2x float32's speed on CPUs with "
                          "AMX, masks within ~1%% of float32's; ~9x slower than float32 on CPUs "
                          "without bfloat16 arithmetic), float16 on GPUs (default: the precision the "
                          "session file was made in, where this device runs it at speed, else auto)")
    seg.add_argument("--direction", default="both", choices=("both", "forward", "backward"),
                     help="propagate from the prompts forward, backward or both ways (default: both)")
    seg.add_argument("--start", type=int, metavar="N", help="first frame to segment (default: 0)")
    seg.add_argument("--stop", type=int, metavar="N", help="segment frames before N (default: all)")
    seg.add_argument("--axis", type=int, metavar="N",
                     help="the input axis to track through (default: the session's, else time, else z)")
    seg.add_argument("--channels", type=int, nargs="+", metavar="C",
                     help="channel(s) feeding SAM 2: one shown as gray, two or three as red, green, blue")
    seg.add_argument("--contrast", type=float, nargs=2, metavar=("LO", "HI"),
                     help="intensities mapped to black and white for the whole stack "
                          "(default: the session's, else robust percentiles)")
    seg.add_argument("--stats", metavar="STATS.csv",
                     help="also write per-object statistics (area, centroid, box, scores) as CSV")
    seg.add_argument("--save-session", metavar="SESSION.json",
                     help="also write the session as run (resolved model and contrast) for reproducing it")
    seeds = seg.add_argument_group("seeding objects (with or without --prompts)")
    seeds.add_argument("--seeds", metavar="LABELS",
                       help="instance label image (e.g. Cellpose/StarDist): every id becomes an object "
                            "with that id; 2-D for one frame, or a stack whose non-empty frames all seed")
    seeds.add_argument("--seed-frame", type=int, metavar="N",
                       help="the frame a 2-D --seeds image is for (default 0); with a stack, only this frame")
    seeds.add_argument("--auto-seed", type=int, metavar="N",
                       help="seed every object SAM 2 finds on frame N (automatic mask generation)")
    seeds.add_argument("--auto-seed-out", metavar="FOUND.tif",
                       help="also write the labels --auto-seed found, for review (reuse with --seeds)")
    seeds.add_argument("--auto-seed-points", type=int, default=32, metavar="K",
                       help="--auto-seed tries a K x K grid of points (default 32; 16 is 4x faster)")
    seeds.add_argument("--auto-seed-min-area", type=int, default=64, metavar="PX",
                       help="--auto-seed drops objects, holes and islands smaller than PX pixels "
                            "(default 64)")
    seeds.add_argument("--auto-seed-iou", type=float, default=0.8, metavar="T",
                       help="--auto-seed keeps masks whose predicted IoU is above T "
                            "(default 0.8; lower finds more)")
    seeds.add_argument("--auto-seed-stability", type=float, default=0.9, metavar="T",
                       help="--auto-seed keeps masks whose stability score is at least T (default 0.9)")

    from napari_sam2.batch.cli import add_batch_parser

    add_batch_parser(sub, seg)

    view = sub.add_parser("view", help="open a stack in napari with the SAM 2 widget",
                          description="Open INPUT (or a sample) in napari with the SAM 2 widget docked.")
    view.add_argument("input", metavar="INPUT", nargs="?", help="image stack to open")
    view.add_argument("--sample", choices=sorted(_SAMPLES),
                      help="open a synthetic sample instead: 'cells' (12-bit time-lapse of moving, "
                           "dividing, blinking cells) or 'volume' (CT-like 3D volume)")
    view.add_argument("--prompts", metavar="SESSION.json", help="session file to load in the widget")
    return parser


# --------------------------------------------------------------------------- helpers
def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Interrupted(KeyboardInterrupt):
    """Raised by a stop signal outside the propagation loop (or by a second one inside it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def _signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class _StopFlag:
    """SIGINT and SIGTERM handler: the same rules for both.

    Before propagation starts (reading, model loading), a signal stops at once: nothing has
    been written. While frames are computed or the output is written, the first signal asks to
    stop after the current frame (what finished is written) and a second one stops now.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.stopped = False
        self.signum: int | None = None  # the signal received, once stopped
        self.running = False  # True once frames are being computed: stop after the current one
        self._previous = {}

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def signal_name(self) -> str:
        """The received signal's name, for messages (``signum`` is set whenever ``stopped`` is)."""
        return _signal_name(self.signum or signal.SIGINT)

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (embedded use): keep the default behaviour
                pass
        return self

    def _handle(self, signum, frame):
        if self.stopped or not self.running:
            self.stopped, self.signum = True, self.signum or signum
            raise _Interrupted(signum)
        self.stopped, self.signum = True, signum
        _say(f"\nnapari-sam2: {_signal_name(signum)} received: stopping after the current frame "
             "(send it again to stop now)")

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        return False


# --------------------------------------------------------------------------- segment
def _inputs(args, input_path: Path, session_file) -> list:
    """Everything a run reads, for checking that no output replaces it."""
    inputs = [("input", input_path)]
    named = (("session file", args.prompts), ("--seeds", getattr(args, "seeds", None)))
    inputs += [(name, Path(path)) for name, path in named if path is not None]
    # an array inside a zarr group (OME-Zarr image/0): the whole group is the user's data
    for parent in input_path.resolve().parents:
        if parent.suffix.lower() == ".zarr" or any((parent / n).is_file() for n in (".zgroup", "zarr.json")):
            inputs.append(("input's zarr group", parent))
    for obj in session_file.objects:
        for p in obj.prompts:
            if p.kind == "mask" and p.mask_path:
                mask = Path(p.mask_path)
                inputs.append(("mask file", mask if mask.is_absolute() else Path(args.prompts).parent / mask))
    for model in (args.model, session_file.settings.model):
        if model and Path(model).expanduser().exists():
            inputs.append(("model", Path(model).expanduser()))
    return inputs


def _check_outputs(args, input_path: Path, session_file=None) -> None:
    """Check every output path before anything is loaded or written."""
    from napari_sam2.io.atomic import check_output_paths
    from napari_sam2.io.writers import labels_format

    out = Path(args.out)
    fmt = labels_format(out)
    if args.stats is not None and Path(args.stats).suffix.lower() != ".csv":
        raise CliError(f"--stats '{args.stats}': statistics are written as CSV; use a .csv name")
    if args.contrast is not None:
        lo, hi = args.contrast
        if not lo < hi:
            raise CliError(f"--contrast {lo:g} {hi:g}: LO must be below HI")
    outputs = [("--out", out, "folder" if fmt == "zarr" else "file"),
               ("--stats", args.stats, "file"),
               ("--save-session", args.save_session, "file")]
    if args.save_session:  # its mask files are written into <stem>_masks/
        session = Path(args.save_session)
        outputs.append(("--save-session's mask folder", session.with_name(f"{session.stem}_masks"),
                        "related"))
    inputs = _inputs(args, input_path, session_file) if session_file is not None else [("input", input_path)]
    check_output_paths(outputs, inputs)


def _check_bounds(args, n_frames: int) -> None:
    start = 0 if args.start is None else args.start
    stop = n_frames if args.stop is None else args.stop
    if not 0 <= start < n_frames:
        raise CliError(
            f"--start {start} is out of range: the input has {n_frames} frames (0..{n_frames - 1})"
        )
    if not 0 < stop <= n_frames:
        raise CliError(f"--stop {stop} is out of range: the input has {n_frames} frames (stop 1..{n_frames})")
    if stop <= start:
        raise CliError(f"--stop {stop} must be greater than --start {start}")


def _model_name(args, settings) -> str:
    """The model a run uses: --model, else the session's, else sam2.1-tiny."""
    return args.model or settings.model or "sam2.1-tiny"


def _precision(args, settings) -> tuple[str, str | None]:
    """The precision a run uses and a note when the session's is not used.

    --precision, else the session's (a replay computes as the original did), else auto. A
    session made in a precision this device cannot run (float16 from a GPU, replayed on a CPU),
    or computes without arithmetic units for it (bfloat16 on most CPUs: ~9x slower), runs in
    auto, and the note says so.
    """
    if args.precision is not None:
        return args.precision, None
    from napari_sam2.engine.devices import replay_precision

    precision, note = replay_precision(settings.precision, "auto", args.device)
    return precision, None if note is None else f"napari-sam2: {note} (choose with --precision)"


def _slow_precision(precision: str, device: str) -> str | None:
    """The warning for a precision this device computes without arithmetic units for it."""
    from napari_sam2.engine.devices import precision_note

    try:
        return precision_note(precision, device)
    except ModelLoadError:  # refused: load_model says why, with the rest of its checks
        return None


def _load_model(args, settings):
    from napari_sam2.engine.models import load_model

    name = _model_name(args, settings)
    precision, note = _precision(args, settings)
    if note:
        _say(note)
    _say(f"napari-sam2: loading model {name} (device {args.device}"
         + ("" if precision == "auto" else f", {precision}") + ")")
    slow = _slow_precision(precision, args.device)
    if slow:
        _say(f"napari-sam2: warning: {slow}")
    try:
        return load_model(name, device=args.device, dtype=precision)
    except ModelLoadError as err:
        if args.model is None and settings.model is not None:
            raise ModelLoadError(f"{one_line(err)} (the model named in the session file's "
                                 "settings.model; choose one with --model)") from None
        raise


def _segment(args, *, model=None, on_frame=None) -> int:
    """Run ``segment``; returns the exit status.

    ``model`` is a model already loaded for this run's model name and device (batch workers
    load theirs once and keep it); ``on_frame(frame, done, total)`` is called after each step.
    """
    with _StopFlag() as stop:
        return _run_segment(args, stop, model=model, on_frame=on_frame)


def _run_segment(args, stop: _StopFlag, *, model=None, on_frame=None) -> int:
    from napari_sam2 import seeding
    from napari_sam2.engine.frames import resolve_channels
    from napari_sam2.io.atomic import partial_path
    from napari_sam2.io.readers import default_video_axis, open_stack, video_frames
    from napari_sam2.io.session_file import (
        SessionFile,
        SessionSettings,
        check_session_fits,
        read_session,
        replay,
        session_from_engine,
        write_session,
    )
    from napari_sam2.io.stats import ObjectStats
    from napari_sam2.io.writers import LabelsWriter, label_dtype

    input_path = Path(args.input)
    seeding.check_options(args)
    if not input_path.exists():
        raise CliError(f"input '{input_path}' does not exist")
    _check_outputs(args, input_path)  # format and option checks: before reading anything
    session_file = read_session(args.prompts) if args.prompts else SessionFile()
    _check_outputs(args, input_path, session_file)  # against every input, before the model loads
    settings = session_file.settings
    stack = open_stack(input_path)
    for note in stack.metadata.get("notes", ()):
        _say(f"napari-sam2: note: {note}")
    axis = args.axis if args.axis is not None else settings.axis
    frames, geometry = video_frames(stack, axis)
    n_frames, frame_shape = int(frames.shape[0]), tuple(int(s) for s in frames.shape[1:3])
    if args.prompts:
        check_session_fits(session_file, n_frames, frame_shape)
    _check_bounds(args, n_frames)
    seeds = seeding.check_seed_inputs(args, n_frames, frame_shape, input_path)
    label_dtype(max([0, *session_file.ids, *(seeds.ids if seeds else [])]))
    channels = args.channels if args.channels is not None else settings.channels
    try:  # before the model loads
        resolve_channels(int(frames.shape[3]) if frames.ndim == 4 else None, channels)
    except ValueError as err:
        where = "--channels" if args.channels is not None else "the session's channels"
        raise CliError(f"{where}: {err}") from None

    # ---- the model and the prompts (minutes at most; a signal here writes nothing)
    from napari_sam2.engine.session import Sam2Session

    if model is None:
        model = _load_model(args, settings)
    # a session file's contrast is "auto" or limits as JSON lists; FrameSource checks its shape
    contrast: Any = list(args.contrast) if args.contrast is not None else (settings.contrast or "auto")
    session = Sam2Session(model, frames, channels=channels, contrast=contrast)
    prompted = f"{len(session_file.objects)} object(s), " if args.prompts else ""
    _say(f"napari-sam2: {prompted}{n_frames} frames of {frame_shape[0]}x{frame_shape[1]} px "
         f"from {input_path.name}")
    if args.prompts:
        replay(session_file, session)
    seeding.seed_session(args, session, seeds, geometry, _say)
    ids = session.objects
    names = {**{i: f"object {i}" for i in ids}, **session_file.names}
    if args.save_session:  # complete whatever happens next: the prompts and settings as run
        used_axis = axis if axis is not None else default_video_axis(stack)
        run_settings = SessionSettings(**{**settings.__dict__, "model": model.name,
                                          "axis": used_axis if used_axis >= 0 else None,
                                          "channels": channels, "contrast": None})
        write_session(args.save_session, session_from_engine(session, run_settings, names,
                                                             {o.id: o.extra for o in session_file.objects}))

    # ---- propagation, streamed to the output (under a temporary name until complete)
    plan = session.plan_propagation(args.direction, args.start, args.stop)
    stats = ObjectStats(geometry, names) if args.stats else None
    written_frames = len(set(plan))
    writer = LabelsWriter(args.out, (n_frames, *frame_shape), max(ids), geometry)
    from tqdm import tqdm

    from napari_sam2.label_edits import paint_masks

    # frame -> object id -> SAM 2's predicted IoU (None where the engine gave none)
    scores: dict[int, dict[int, float | None]] = {}
    done, failure = 0, None
    bar = tqdm(total=len(plan), desc="segmenting", unit="frame", file=sys.stderr, dynamic_ncols=True)
    stop.running = True
    if on_frame is not None:
        on_frame(None, 0, len(plan))
    try:
        frames_iter = session.propagate(args.direction, args.start, args.stop)
        try:
            for frame, masks in frames_iter:
                # a frame can come twice (forward for one object, backward for another):
                # add to what it holds, with the widget's rules (higher ids win overlaps)
                labels = writer.read_frame(frame)
                paint_masks(labels, (Ellipsis,), masks, ids, boxes=getattr(masks, "boxes", None))
                writer.write_frame(frame, labels)
                scores.setdefault(frame, {}).update({o: masks.scores.get(o) for o in masks})
                done += 1
                bar.update(1)
                if on_frame is not None:
                    on_frame(frame, done, len(plan))
                if stop.stopped:
                    break
        finally:
            if isinstance(frames_iter, Generator):  # propagate() is one: stop the engine's work now
                frames_iter.close()
    except _Interrupted:
        pass  # a second signal: stop now, write what finished
    except Exception as err:
        failure = err
    finally:
        bar.close()
    complete = failure is None and not stop.stopped

    try:
        if complete:
            # labels first: a statistics problem never costs the labels
            try:
                writer.close()
            except OSError:
                _say(f"napari-sam2: could not write {args.out}"
                     + (" (the earlier file is unchanged)" if Path(args.out).exists() else ""))
                raise
            if stats is not None:
                _add_stats(stats, writer, scores)
                try:
                    stats.write_csv(args.stats)
                except OSError:
                    _say(f"napari-sam2: wrote {args.out}, but could not write {args.stats}")
                    raise
            _say(f"napari-sam2: wrote {args.out} ({written_frames} of {n_frames} frames segmented)"
                 + (f" and {args.stats}" if stats else ""))
            return EXIT_OK
        partial = writer.close_partial()
        partial_stats = None
        if stats is not None and partial is not None:
            _add_stats(stats, writer, scores)
            try:
                partial_stats = stats.write_csv(partial_path(args.stats))
            except OSError as err:
                _say(f"napari-sam2: could not write the statistics: {one_line(err)}")
        if partial is None:
            wrote = "nothing could be written"
        else:
            wrote = (f"wrote the {writer.n_written} frames reached to {partial} (frames not reached are 0)"
                     + (f" and their statistics to {partial_stats}" if partial_stats else ""))
        kept = [p for p in (args.out, args.stats) if p is not None and Path(p).exists()]
        if kept:
            wrote += "; " + " and ".join(kept) + (" is" if len(kept) == 1 else " are") + " unchanged"
        if failure is not None:
            _say(f"napari-sam2: stopped by an error after {done} of {len(plan)} steps: {wrote}")
            raise failure
        _say(f"napari-sam2: interrupted ({stop.signal_name}) after {done} of {len(plan)} "
             f"steps: {wrote}")
        return stop.exit_code
    except _Interrupted:
        _say(f"napari-sam2: interrupted ({stop.signal_name}) while writing: nothing was "
             "written, earlier outputs are unchanged")
        return stop.exit_code
    finally:
        writer.discard()  # after a close this does nothing; after a second signal it cleans up
        stack.close()


def _add_stats(stats, writer, scores) -> None:
    """Measure the final labels (after all visits of each frame)."""
    for frame in sorted(scores):
        stats.add_frame(frame, writer.read_frame(frame), scores[frame], scores[frame])


# --------------------------------------------------------------------------- view
def _view(args) -> int:
    from napari_sam2.io.session_file import read_session

    if (args.input is None) == (args.sample is None):
        raise CliError("give either INPUT or --sample (cells or volume) to open")
    _check_display()
    stack = None
    if args.input is not None:
        from napari_sam2.io.readers import open_stack

        input_path = Path(args.input)
        if not input_path.exists():
            raise CliError(f"input '{input_path}' does not exist")
        stack = open_stack(input_path)
    session_file = read_session(args.prompts) if args.prompts else None
    import napari

    viewer = napari.Viewer()
    if stack is None:
        from napari_sam2 import samples

        for data, meta, kind in getattr(samples, _SAMPLES[args.sample])():
            getattr(viewer, f"add_{kind}")(data, **meta)
        _dock_widget(viewer, session_file)
    else:
        open_in_viewer(viewer, stack, session_file)
    napari.run()
    return EXIT_OK


#: Qt platforms that draw without a display server
_HEADLESS_QT = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs")


def _check_display() -> None:
    """Refuse in one line when there is no display, instead of letting Qt abort the process."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in _HEADLESS_QT:
        return
    raise CliError("'napari-sam2 view' needs a display and none is set (DISPLAY and WAYLAND_DISPLAY "
                   "are empty): run it on a desktop, over 'ssh -X', or under 'xvfb-run'; "
                   "'napari-sam2 segment' needs no display")


def open_in_viewer(viewer, stack, session_file=None):
    """Add a stack to a napari viewer, dock the SAM 2 widget and load a session into it.

    Returns
    -------
    (layers, widget)
        The image layer(s) added and the dock widget (None if it could not be docked).
    """
    from napari.utils.notifications import show_info

    from napari_sam2._npe2_io import stack_layer_data

    for note in stack.metadata.get("notes", ()):  # how the file was read, where it was ambiguous
        _say(f"napari-sam2: note: {note}")
        show_info(note)
    layers = []
    for data, meta, kind in stack_layer_data(stack):
        added = getattr(viewer, f"add_{kind}")(data, **meta)
        layers.extend(added if isinstance(added, list) else [added])
    widget = _dock_widget(viewer, session_file)
    return layers, widget


def _dock_widget(viewer, session_file=None):
    """Dock the SAM 2 widget and load a session file into it; returns the widget or None."""
    widget = None
    try:
        _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    except Exception as err:  # the widget is optional for viewing: say why and go on
        _say(f"napari-sam2: warning: could not dock the SAM 2 widget: {one_line(err)}")
    if session_file is not None:
        hook = getattr(widget, "load_session", None)
        if callable(hook):
            hook(session_file.path)
        else:
            _say("napari-sam2: warning: the SAM 2 widget cannot load a session file here; "
                 "load it with the widget's 'Load session' button")
    return widget


# --------------------------------------------------------------------------- entry point
def main(argv=None) -> int:
    """Run the command line; returns the exit status (0, 2 bad input, 130 / 143 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "segment" and not (args.prompts or args.seeds or args.auto_seed is not None):
        parser.error("the following arguments are required: --prompts (or --seeds or --auto-seed)")
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "batch":
            from napari_sam2.batch.cli import run_command

            return run_command(args)
        return _view(args)
    except _Interrupted as stop:
        _say(f"napari-sam2: interrupted ({_signal_name(stop.signum)}) before segmenting started: "
             "no labels were written")
        return 128 + stop.signum
    except KeyboardInterrupt:
        _say("napari-sam2: interrupted before segmenting started: no labels were written")
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as err:
        # user errors (bad files, prompts, model names, devices) arrive as ValueError
        # subclasses: Sam2InputError, ModelLoadError, SessionFileError, ImageReadError...
        _say(f"napari-sam2: error: {one_line(err)}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
