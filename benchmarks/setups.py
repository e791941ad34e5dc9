"""What the benchmarks run on: the machine, the models, the frames, and the transformers baseline.

Everything here is deterministic (seeded weights, frames made from their index), so two runs of
the benchmark, or the engine and the baseline within one run, see exactly the same work.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

#: Benchmark configurations. "small" is the test config (napari_sam2.testing.tiny_config(256));
#: "tiny-1024" is SAM 2.1 hiera-tiny at 1024 px (transformers.Sam2VideoConfig() as it comes).
#: On CUDA the four released sizes run at 1024 px (napari_sam2.engine.checkpoints.variant_config).
#: The other families: "sam3-small" / "edgetam-small" are their test configs
#: (napari_sam2.testing), "sam3-1008" SAM 3's tracker as released (ViT-L, 1008 px) and
#: "edgetam-1024" EdgeTAM as released (RepViT through timm: needs timm and torchvision).
CPU_CONFIGS = ("small", "tiny-1024")
FAMILY_CONFIGS = ("sam3-small", "edgetam-small", "sam3-1008", "edgetam-1024")
CUDA_CONFIGS = ("tiny-1024", "small-1024", "base-plus-1024", "large-1024")


# --------------------------------------------------------------------------- machine

def machine_info(device: str) -> dict:
    """CPU model, cores, threads, library versions (and the GPU on CUDA)."""
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _total_memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": device,
        "load_average_start": _load_average(),
    }
    try:
        import zarr

        info["zarr"] = zarr.__version__
    except ImportError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _total_memory_gib() -> float:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return float("nan")


def available_memory() -> int:
    """Bytes of memory available to a new process."""
    import psutil

    return int(psutil.virtual_memory().available)


def _load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def load_average():
    return _load_average()


# --------------------------------------------------------------------------- models

def build_model(config: str, device: str = "cpu", seed: int = 0):
    """A random-initialised network for a benchmark configuration, as a Sam2Model.

    The object-score bias is raised (as in napari_sam2.testing) so that the random network
    "sees" the objects: empty masks would skip work and flatter both sides.
    """
    import torch
    import transformers
    from transformers import Sam2VideoConfig

    from napari_sam2 import testing
    from napari_sam2.engine.families import FAMILIES
    from napari_sam2.engine.models import Sam2Model

    family = config.split("-")[0] if config.startswith(("sam3-", "edgetam-")) else "sam2"
    if config == "small":
        cfg = testing.tiny_config(256)
    elif config == "small-128":  # the same network at 128 px (long memory runs)
        cfg = testing.tiny_config(128)
    elif config == "sam3-small":
        cfg = testing.tiny_sam3_config(224)
    elif config == "edgetam-small":
        cfg = testing.tiny_edgetam_config(256)
    elif config == "sam3-1008":
        cfg = transformers.Sam3TrackerVideoConfig()
    elif config == "edgetam-1024":
        from napari_sam2.engine.edgetam_checkpoint import edgetam_config

        cfg = edgetam_config()
    elif config == "tiny-1024":
        cfg = Sam2VideoConfig()  # SAM 2.1 hiera-tiny at 1024 px
    elif config.endswith("-1024"):
        from napari_sam2.engine.checkpoints import variant_config

        cfg = variant_config(config[: -len("-1024")], image_size=1024)
    else:
        raise ValueError(f"unknown benchmark configuration {config!r}")
    torch.manual_seed(seed)
    net = getattr(transformers, FAMILIES[family].model_class)(cfg)
    with torch.no_grad():
        net.mask_decoder.pred_obj_score_head.proj_out.bias += 3.0
    net = net.eval().to(device)
    autocast = torch.bfloat16 if device == "cuda" else None
    return Sam2Model(network=net, device=torch.device(device), name=f"bench-{config}-seed{seed}",
                     autocast_dtype=autocast)


def seeded_propagation(model, stack) -> tuple[float, list[np.ndarray]]:
    """Seed every label of ``stack.labels(0)``, propagate forward: median s per frame, label images.

    Frame 0 (the seeding) is not counted in the time.
    """
    from napari_sam2 import Sam2Session

    session = Sam2Session(model, stack)
    session.add_label_image(0, stack.labels(0))
    stamps, labels = [time.perf_counter()], []
    for frame, _ in session.propagate("forward"):
        stamps.append(time.perf_counter())
        labels.append(session.labels(frame))
    return float(np.median(np.diff(stamps)[1:])), labels


def alternate(arms: dict, rounds: int) -> tuple[dict[str, list], dict[str, float]]:
    """Run each arm (a callable returning ``(seconds, result)``) in turn, ``rounds`` times.

    Alternating in one process lets every arm see the same machine load. Returns every run per
    arm and each arm's best time.
    """
    runs: dict[str, list] = {name: [] for name in arms}
    for r in range(rounds):
        for name, arm in arms.items():
            runs[name].append(arm())
            print(f"round {r}: {name:12s} {runs[name][-1][0]:.3f} s per frame, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return runs, {name: min(t for t, _ in rs) for name, rs in runs.items()}


# --------------------------------------------------------------------------- frames

class GeneratedStack:
    """A lazily generated ``(n, side, side)`` uint8 stack: discs drifting over textured noise.

    Frames are made on request from their index (nothing is held), cheaply (a frame costs about
    what reading an uncompressed frame from a local disk costs), and identically every time.
    ``delay`` adds a wait per read, like a video decoder or a network drive.
    """

    def __init__(self, n: int, side: int = 512, delay: float = 0.0, seed: int = 0):
        self.shape = (int(n), int(side), int(side))
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.delay = float(delay)
        rng = np.random.default_rng(seed)
        self._noise = (rng.random((4, side, side)) * 60).astype(np.uint8)
        r = max(2, side // 14)
        yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
        self._disc = (yy ** 2 + xx ** 2) < r ** 2
        self.reads = 0

    def centers(self, t: int, k: int) -> np.ndarray:
        """(k, 2) row/col centres of the first k discs on frame t (the objects to click)."""
        side = self.shape[1]
        grid = int(np.ceil(np.sqrt(max(k, 1))))
        step = side / (grid + 1)
        out = []
        for i in range(k):
            r, c = divmod(i, grid)
            # a slow periodic drift keeps every disc inside the frame however long the stack
            phase = 2 * np.pi * t / 200 + i
            out.append(((r + 1) * step + 0.2 * step * np.sin(phase),
                        (c + 1) * step + 0.2 * step * np.cos(phase)))
        return np.asarray(out)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t):
        t = int(t)
        if not 0 <= t < self.shape[0]:
            raise IndexError(t)
        if self.delay:
            time.sleep(self.delay)
        self.reads += 1
        side = self.shape[1]
        frame = self._noise[t % 4].copy()
        h = self._disc.shape[0] // 2
        for r, c in np.round(self.centers(t, 10)).astype(int):
            r0, c0 = max(r - h, 0), max(c - h, 0)
            r1, c1 = min(r + h + 1, side), min(c + h + 1, side)
            stamp = self._disc[r0 - r + h:r1 - r + h, c0 - c + h:c1 - c + h]
            frame[r0:r1, c0:c1][stamp] = 200
        return frame


# --------------------------------------------------------------------------- transformers baseline

class Baseline:
    """transformers' own ``Sam2VideoInferenceSession`` with every frame preloaded.

    This is what its documentation shows (processor -> ``init_video_session(video=...)`` ->
    ``add_inputs_to_inference_session`` -> ``model(...)`` / ``propagate_in_video_iterator``),
    minus the processor, which needs torchvision: frames get the engine's own preprocessing
    (the parity tests show it is the same input), and masks the same upsampling.
    """

    def __init__(self, model, stack, image_size: int):
        import torch

        from napari_sam2.engine.frames import FrameSource

        self.model = model
        self.net = model.network
        self.source = FrameSource(stack, image_size, mean=model.image_mean, std=model.image_std)
        Sam2VideoInferenceSession = model.family.inference_session_class()
        t0 = time.perf_counter()
        dev = model.device
        video = torch.stack([self.source.model_input(t, dev) for t in range(self.source.n_frames)])
        self.preload_s = time.perf_counter() - t0
        h, w = self.source.frame_shape
        self.state = Sam2VideoInferenceSession(video=video, video_height=h, video_width=w,
                                               inference_device=dev, inference_state_device=dev,
                                               video_storage_device=dev, dtype=torch.float32)
        self.frame_shape = (h, w)
        self.image_size = image_size
        self._new: list[int] = []

    def click(self, frame: int, obj_id: int, points, labels):
        """Add clicks and run the frame, as transformers' docs do; the object's mask."""
        import torch

        from napari_sam2.conversions import rowcol_to_model_xy

        xy = rowcol_to_model_xy(np.asarray(points, float), self.frame_shape, self.image_size)
        idx = self.state.obj_id_to_idx(obj_id)
        coords = torch.from_numpy(xy)[None, None].to(self.model.device)
        labs = torch.tensor(labels, dtype=torch.int32)[None, None].to(self.model.device)
        self.state.add_point_inputs(idx, frame, {"point_coords": coords, "point_labels": labs})
        self.state.remove_mask_inputs(idx, frame)
        self.state.obj_with_new_inputs = [obj_id]
        with self.model.inference():
            out = self.net(self.state, frame_idx=frame)
        return self._masks(out)[obj_id]

    def propagate(self, start=None, reverse=False):
        """Yield (frame, {obj_id: mask}) as ``propagate_in_video_iterator`` gives them."""
        with self.model.inference():
            for out in self.net.propagate_in_video_iterator(self.state, start_frame_idx=start,
                                                             reverse=reverse):
                yield out.frame_idx, self._masks(out)

    def _masks(self, out):
        import torch.nn.functional as F

        masks = {}
        for i, obj_id in enumerate(out.object_ids):
            x = out.pred_masks[i:i + 1].float()
            x = F.interpolate(x, size=self.frame_shape, mode="bilinear", align_corners=False)
            masks[obj_id] = (x[0, 0] > 0).cpu().numpy()
        return masks
