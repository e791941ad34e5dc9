"""Take the user guide's screenshots in a real napari window (run under Xvfb on a headless machine).

    xvfb-run -a python docs/make_screenshots.py [MODEL]

MODEL is a model name, folder or .pt file; without one, a small random-initialised SAM 2 is
used, so the masks show the workflow, not SAM 2's accuracy (the seed mask on the first frame
is the sample's ground truth).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "images"


def main(model=None):
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam2.samples import make_cells_timelapse
    from napari_sam2.testing import save_tiny_model

    HERE.mkdir(exist_ok=True)
    if model is None:
        model = str(save_tiny_model(Path(tempfile.mkdtemp()) / "tiny", image_size=256))
    cells = make_cells_timelapse(n_frames=24, shape=(256, 256), n_cells=8, seed=0)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 740)  # a laptop screen: the dock must fit
    viewer.add_image(cells.image, name="cells (12-bit)", colormap="gray",
                     contrast_limits=[float(cells.image.min()), float(np.percentile(cells.image, 99.8))])
    gt = viewer.add_labels(cells.labels, name="ground truth", visible=False)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    widget.synchronous = True
    widget.model_path.setText(model)
    widget.device_combo.setCurrentText("cpu")
    widget.load_chosen_model()  # the prompt layers appear, Image and Model fold

    def shot(name):
        for _ in range(5):
            QApplication.processEvents()
        viewer.screenshot(str(HERE / name), canvas_only=False)
        print("wrote", HERE / name)

    # 1. a click on frame 0, and the cell's ground-truth label as a seed mask: the mask shows at
    # once (a random model's click alone gives a random-looking mask)
    obj = widget.new_object("cell 1")
    widget.ensure_session()
    widget.go_to_frame(0)
    cell_id = int(cells.labels[0][128, 128]) or int(np.unique(cells.labels[0])[1])
    rr, cc = np.argwhere(cells.labels[0] == cell_id).mean(axis=0)
    widget.prompts.points.add([0, rr, cc])
    widget._refresh_layer_choices()
    widget.mask_source.setCurrentText(gt.name)
    widget.mask_id.setValue(cell_id)
    widget.mask_from_labels()
    shot("01-click.png")
    # 2. propagation through the stack
    widget.propagate()
    widget.go_to_frame(12)
    shot("02-propagated.png")
    # 3. a correction on a tracked frame, kept by the next run
    widget.toggle_polarity()
    widget.prompts.points.add([12, rr, cc + 20])
    widget.direction_combo.setCurrentText("forward")
    widget.range_section.set_expanded(True)
    widget.start_spin.setValue(12)
    widget.propagate()
    shot("03-correction.png")
    viewer.close()
    return obj


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
