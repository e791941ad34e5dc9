"""Work ahead of the tracking loop: the next frames are read while the current one is tracked.

SAM 2 tracks frame after frame because every frame's memory attention reads the masks of the
frames before it, but the *inputs* of the next frames are known as soon as a propagation starts:
reading a frame (a TIFF page, a video frame to decode, a chunk from a network drive), mapping its
intensities and resizing it, and running the image encoder, depend on nothing the loop computes.
:class:`Prefetcher` does that work ahead:

* a background thread reads and preprocesses the next ``depth`` frames of the propagation while
  the tracking thread runs the network (and loads features already in the on-disk store into
  memory), so slow readers cost nothing once the loop runs;
* with ``encode_batch > 1`` the image encoder runs on several upcoming frames in one batch (on a
  GPU a batch fills the device better; on a 2-core CPU it does not help, see docs/performance.md,
  and float results differ in the last bits from one frame at a time).

The prefetcher stands in for the session's ``processed_frames`` (transformers reads frames from
it) and is asked by the :class:`~napari_sam2.engine.cache.FeatureCache` before every lookup, so
that the tracking thread waits for a frame the background thread is working on instead of
reading it a second time. Every read of the stack goes through one lock: readers that are not
thread-safe (video decoders, HDF5) are never used from two threads at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

__all__ = ["Prefetcher"]


class Prefetcher(Sequence):
    """Read, preprocess and optionally encode the frames a propagation needs next.

    Parameters
    ----------
    source : FrameSource
        The session's frames.
    model : Sam2Model
        The session's model (its device, and its network for batched encoding).
    cache : FeatureCache
        The session's feature cache: frames whose features are there are skipped, features
        from the disk store and batched encodings go there. Its ``max_frames`` must exceed
        ``max(depth, encode_batch)`` by two, so that nothing prepared is dropped before use.
    depth : int
        How many frames to prepare ahead of the one being tracked (0: none on a thread).
    encode_batch : int
        Frames encoded together by the image encoder (1: one at a time, as SAM 2 does).
    """

    def __init__(self, source, model, cache, *, depth: int = 2, encode_batch: int = 1):
        if depth < 0 or encode_batch < 1:
            raise ValueError("depth must be >= 0 and encode_batch >= 1")
        room = cache.max_frames - 2
        if max(depth, encode_batch) > room:
            raise ValueError(
                f"prefetching {max(depth, encode_batch)} frames needs a feature cache of at least "
                f"{max(depth, encode_batch) + 2} frames (it holds {cache.max_frames}): raise cache_frames"
            )
        self._source = source
        self._model = model
        self._cache = cache
        self.depth = int(depth)
        self.encode_batch = int(encode_batch)
        self._read_lock = threading.RLock()  # one reader of the stack at a time
        self._cond = threading.Condition()
        self._plan: list[int] = []
        self._next = 0  # the next plan position the worker prepares
        self._consumed = 0  # the plan position the tracking thread is at
        self._busy: int | None = None  # the plan position the worker is preparing
        self._ready: dict[int, object] = {}  # frame -> preprocessed model input
        self._generation = 0
        self._active = False  # a worker runs for the current plan
        cache.prefetcher = self

    # ------------------------------------------------------------------ processed_frames
    def __len__(self) -> int:
        return self._source.n_frames

    def __getitem__(self, t):
        """The model input of frame ``t``: prepared ahead if it was planned, else read now."""
        t = int(t)
        self._wait_for(t)
        with self._cond:
            x = self._ready.pop(t, None)
        if x is None:
            x = self._read(t)
        return x

    def reading(self):
        """Context manager: hold the stack's read lock (for reads made outside the prefetcher)."""
        return self._read_lock

    # ------------------------------------------------------------------ control
    def start(self, frames: Sequence[int]) -> None:
        """Prepare ``frames`` in this order (the frames a propagation will need features for).

        A thread works through them, at most ``depth`` frames ahead of the tracking thread,
        and ends with the plan (or at :meth:`stop`), so an idle session holds no thread.
        """
        with self._cond:
            self._reset()
            self._plan = [int(f) for f in frames]
            self._active = bool(self.depth and self._plan)
            if self._active:
                threading.Thread(target=self._work, args=(self._generation,), name="sam2-prefetch",
                                 daemon=True).start()

    def stop(self) -> None:
        """Forget the plan and what was prepared for it (the worker finishes its frame and ends)."""
        with self._cond:
            self._reset()

    def _reset(self) -> None:
        self._generation += 1
        self._plan = []
        self._next = self._consumed = 0
        self._busy = None
        self._active = False
        self._ready.clear()
        self._cond.notify_all()

    # ------------------------------------------------------------------ tracking-thread side
    def before_lookup(self, t: int) -> None:
        """Called by the feature cache before it looks up frame ``t`` (tracking thread)."""
        self._wait_for(int(t))
        if self.encode_batch > 1 and not self._cache.has(int(t)):
            self._encode_ahead(int(t))

    def _position(self, t: int) -> int | None:
        """The plan position of frame ``t`` at or after the tracking thread's (under _cond)."""
        window = self._plan[self._consumed:self._consumed + max(self.depth, self.encode_batch) + 2]
        try:
            return self._consumed + window.index(t)
        except ValueError:
            return None

    def _wait_for(self, t: int) -> None:
        """Move the tracking thread's position to frame ``t``; wait if the worker has it."""
        with self._cond:
            pos = self._position(t)
            if pos is None:
                return
            self._consumed = pos
            self._cond.notify_all()  # room for the worker to go on
            generation = self._generation
            while (self._active and generation == self._generation
                   and (self._next <= pos or self._busy == pos)):
                self._cond.wait()

    def _encode_ahead(self, t: int) -> None:
        """Encode frame ``t`` and the next planned frames without features, in one batch."""
        import torch

        with self._cond:
            pos = self._position(t)
            # only the frames needed next: encoding further ahead could push out of the cache
            # frames that are needed before them
            upcoming = self._plan[pos + 1:pos + self.encode_batch] if pos is not None else []
        frames = [t]
        for f in upcoming:
            if f not in frames and not self._cache.has(f):
                frames.append(f)
        inputs: list = []  # model-input tensors, one per frame
        for f in frames:
            self._wait_for(f)  # the worker may be reading it right now
            with self._cond:
                x = self._ready.pop(f, None)
            inputs.append(self._read(f) if x is None else x)
        out = self._model.network.get_image_features(torch.stack(inputs), return_dict=True)
        for i, f in enumerate(frames):
            # per-frame copies: a view would keep the whole batch alive in the cache
            feats = [x[:, i:i + 1].clone() for x in out.fpn_hidden_states]
            pos_enc = [x[:, i:i + 1] for x in out.fpn_position_encoding]
            self._cache.cache_vision_features(f, {"vision_feats": feats, "vision_pos_embeds": pos_enc})

    def _read(self, t: int):
        with self._read_lock:
            return self._source.model_input(t, self._model.device)

    # ------------------------------------------------------------------ worker
    def _work(self, generation: int) -> None:
        import torch

        stream = None
        if self._model.device.type == "cuda":  # not measured: no GPU where this was written
            stream = torch.cuda.Stream(device=self._model.device)
        else:
            # one thread for this thread's own torch work (the setting is per thread): a second
            # team of OpenMP threads would spin on the cores the network is using
            torch.set_num_threads(1)
        while True:
            with self._cond:
                while generation == self._generation and self._next < len(self._plan) and (
                    self._next - self._consumed >= max(self.depth, self.encode_batch)
                ):
                    self._cond.wait()
                if generation != self._generation or self._next >= len(self._plan):
                    return  # stopped, restarted or done
                pos = self._next
                t = self._plan[pos]
                self._busy = pos
                self._next += 1
            try:
                x = self._prepare(t, stream, torch)
            except Exception:  # noqa: BLE001 - the tracking thread reads it again and reports
                x = None
            with self._cond:
                if generation == self._generation:
                    if x is not None:
                        self._ready[t] = x
                    self._busy = None
                self._cond.notify_all()

    def _prepare(self, t: int, stream, torch):
        """Frame ``t``'s model input, or None if its features are in memory or on disk."""
        cache = self._cache
        if t in cache:
            return None
        with self._read_lock:
            if cache.preload(t):
                return None
            with torch.inference_mode(), (torch.cuda.stream(stream) if stream is not None
                                          else contextlib.nullcontext()):
                x = self._source.model_input(t, self._model.device)
            if stream is not None:
                # the tracking thread's stream must see the upload finished
                torch.cuda.current_stream(self._model.device).wait_stream(stream)
                x.record_stream(torch.cuda.current_stream(self._model.device))
            return x
