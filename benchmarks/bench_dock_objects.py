r"""Many objects through the dock: a long propagation's GUI stalls and Python's full collections.

A stack of ``--cells`` square cells on a grid is opened in a napari window with a Labels layer
holding one id per cell on frame 0. The dock loads the model (``--model``, a folder or a name),
"Seed from labels" turns every label into an object and Propagate tracks them through
``--frames`` frames, as a user would with a Cellpose result. Printed: the run's time, the
objects Python's garbage collector tracks per object and frame, every full (generation 2)
collection during the run with its duration, the longest gaps of a 10 ms timer on the GUI
thread (how long the window did not answer), and the same propagation through the Python API
on the dock's model afterwards (the dock's time over the API's).

Usage (needs a display; under Xvfb the canvas renders in software)::

    python -c "from napari_sam2.testing import save_tiny_model; save_tiny_model('/tmp/tinymodel')"
    xvfb-run -a python benchmarks/bench_dock_objects.py --model /tmp/tinymodel --cells 200 \
        --frames 151 --precision bfloat16
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np


def grid_stack(n_cells: int, n_frames: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames with ``n_cells`` bright squares on a grid and their labels on frame 0."""
    image = np.zeros((n_frames, side, side), np.uint8)
    seeds = np.zeros((n_frames, side, side), np.uint16)
    g = int(np.ceil(np.sqrt(n_cells)))
    cell = side // g
    for k in range(n_cells):
        r, c = divmod(k, g)
        box = np.s_[r * cell + 2:(r + 1) * cell - 2, c * cell + 2:(c + 1) * cell - 2]
        image[(slice(None), *box)] = 200
        seeds[(0, *box)] = 1000 + k  # ids as a segmentation tool gives them
    return image, seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model folder, checkpoint or name")
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--frames", type=int, default=31)
    parser.add_argument("--side", type=int, default=256, help="frame width and height")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    image, seeds = grid_stack(args.cells, args.frames, args.side)
    viewer.add_image(image, name="cells")
    viewer.add_labels(seeds, name="seeds")
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    app = QApplication.instance()

    def wait(done, limit=3600.0):
        t0 = time.monotonic()
        while not done() and time.monotonic() - t0 < limit:
            app.processEvents()
            time.sleep(0.005)

    dock.model_path.setText(args.model)
    dock.precision_combo.setCurrentText(args.precision)
    dock.load_button.click()
    wait(lambda: dock.model is not None and not dock.tasks.busy)
    dock.mask_source.setCurrentText("seeds")
    dock.go_to_frame(0)
    dock.seed_button.click()
    wait(lambda: not dock.tasks.busy)
    print(f"{len(dock.objects)} objects seeded; model: {dock.model_status.text()}", flush=True)

    full: list[float] = []
    started = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        elif info["generation"] == 2:
            full.append(time.perf_counter() - started[0])

    gc.collect()
    before = len(gc.get_objects())
    gc.callbacks.append(on_gc)
    gaps: list[tuple[float, float]] = []
    t0 = last = time.perf_counter()

    def tick():
        nonlocal last
        now = time.perf_counter()
        gaps.append((now - last, now - t0))
        last = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    dock.propagate_button.click()
    wait(lambda: not dock.tasks.busy)
    seconds = time.perf_counter() - t0
    timer.stop()
    gc.callbacks.remove(on_gc)
    gc.collect()
    after = len(gc.get_objects())
    tracked = args.frames - 1
    print(f"{len(dock.objects)} objects x {tracked} tracked frames in {seconds:.0f} s "
          f"({dock.status.text()})")
    print(f"objects tracked by the garbage collector: {before} -> {after}, "
          f"{(after - before) / (len(dock.objects) * tracked):.2f} per object and frame")
    print("full collections during the run (ms):", [round(1000 * s) for s in full])
    print("longest GUI gaps (ms, at s):",
          sorted((round(1000 * g), round(at, 1)) for g, at in gaps)[-5:])

    # the same work through the Python API, on the dock's model, for the ratio
    from napari_sam2 import Sam2Session

    session = Sam2Session(dock.model, image, contrast=dock.session.contrast)
    session.add_label_image(0, seeds[0])
    t0 = time.perf_counter()
    for _ in session.propagate("both"):
        pass
    api = time.perf_counter() - t0
    print(f"the same propagation through the API: {api:.0f} s; dock / API {seconds / api:.2f}")
    viewer.close()


if __name__ == "__main__":
    main()
