"""Image features computed once: a bounded in-memory cache and an optional on-disk store.

SAM 2's image encoder is the expensive part of every frame and does not depend on prompts or on
the memory bank, so its output is computed once per frame and reused by every object, every click
and every re-propagation while it stays in the cache. :class:`FeatureCache` holds at most
``max_frames`` frames and drops the least recently used one (transformers' own cache keeps one
frame and drops the lowest frame index, which is the wrong one when tracking backwards). It
implements the three methods transformers' ``Sam2VideoModel`` calls on
``inference_session.cache``.

The position encodings that come with every frame's features depend only on the feature sizes,
not on the image, yet transformers computes a new copy per frame (88 MB at 1024 px, five times
the features themselves). The cache keeps one shared copy, so a frame costs ~16 MB at 1024 px.

:class:`DiskFeatureStore` keeps features on disk (zarr) so that a stack opened again, or a long
stack that does not fit in memory, never runs the encoder twice. A stale entry is never used:

* the store's *key* hashes everything that changes the model input or the network: the frame
  source's signature (shape, dtype, channels, contrast, model size), the weights, the versions of
  torch and transformers, the device and precision, and the source code of the preprocessing;
* every frame's entry carries a hash of that frame's raw pixels, checked before use, so an edited
  file or another stack of the same shape is recomputed, frame by frame;
* every stored chunk (each frame's features, and the shared position encodings) carries a
  checksum of its bytes, verified when read: flipped bits on disk are never used; the frame is
  recomputed (and rewritten), and the damage is logged.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import os

    import torch

    from napari_sam2.engine.frames import FrameSource
    from napari_sam2.engine.models import Sam2Model
    from napari_sam2.engine.prefetch import Prefetcher

#: One frame's image features as transformers' video model stores them: ``vision_feats`` and
#: ``vision_pos_embeds``, each a list of tensors (one per feature level).
Features = dict[str, list["torch.Tensor"]]

__all__ = ["FeatureCache", "DiskFeatureStore", "store_key", "Features"]

log = logging.getLogger(__name__)

#: Feature entries that are the same for every frame (stored once, shared in memory).
_SHARED_KEYS = ("vision_pos_embeds",)
#: Raw-frame hashes remembered from reads (enough for a prefetch window and a batch).
_DIGEST_MEMORY = 64
#: Frames waiting to be written before the tracking thread waits for the writer.
_WRITE_QUEUE = 8
_DIGEST_BYTES = 16
#: Layout version of the disk store: 3 adds a checksum to every chunk.
_STORE_FORMAT = 3


def _checksum(data) -> bytes:
    """Checksum of a chunk's bytes (blake2b, 16 bytes)."""
    # ndarray has the buffer protocol; numpy declares __buffer__ only for Python 3.12+
    raw = memoryview(np.ascontiguousarray(data)).cast("B")  # type: ignore[arg-type]
    return hashlib.blake2b(raw, digest_size=_DIGEST_BYTES).digest()


class _DamagedEntry(ValueError):
    """A stored chunk whose bytes do not match its checksum."""


class FeatureCache:
    """Least-recently-used store of per-frame vision features, optionally backed by disk.

    Parameters
    ----------
    max_frames : int
        How many frames' features to keep in memory (about 16 MB per frame for 1024 px models,
        1 MB at 256 px, plus one shared copy of the position encodings).
    store : DiskFeatureStore, optional
        Looked up on a memory miss; features computed by the model are written to it.

    Attributes
    ----------
    hits, misses : int
        Lookups answered from memory, and lookups that found nothing (the encoder runs).
    disk_hits : int
        Lookups answered from the disk store.
    """

    def __init__(self, max_frames: int = 8, store: DiskFeatureStore | None = None) -> None:
        if max_frames < 1:
            raise ValueError("the feature cache must hold at least one frame")
        self.max_frames = int(max_frames)
        self.store = store
        self._features: OrderedDict[int, Features] = OrderedDict()
        self._shared: dict[str, list] = {}
        # a prefetching thread may fill the cache while the tracking thread reads it
        self._lock = threading.RLock()
        #: set by a Prefetcher: told before every lookup, holds the lock for reads of the stack
        self.prefetcher: Prefetcher | None = None
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._features

    def has(self, frame_idx: int) -> bool:
        """Whether the frame's features are in memory or (probably) on disk; counts nothing."""
        with self._lock:
            if frame_idx in self._features:
                return True
        return self.store is not None and self.store.has_entry(frame_idx)

    def get_vision_features(self, frame_idx: int) -> Features | None:
        """The frame's features (from memory, else from the disk store), or None: the encoder runs."""
        if self.prefetcher is not None:
            # wait for a frame being prepared ahead instead of reading it a second time
            self.prefetcher.before_lookup(frame_idx)
        with self._lock:
            feats = self._features.get(frame_idx)
            if feats is not None:
                self.hits += 1
                self._features.move_to_end(frame_idx)
                return feats
        feats = self._load(frame_idx)
        if feats is not None:
            return feats
        with self._lock:
            self.misses += 1
        return None

    def preload(self, frame_idx: int) -> bool:
        """Bring a frame's features from the disk store into memory; whether they are there now."""
        with self._lock:
            if frame_idx in self._features:
                return True
        return self._load(frame_idx) is not None

    def _load(self, frame_idx: int) -> Features | None:
        if self.store is None:
            return None
        reading = self.prefetcher.reading() if self.prefetcher is not None else contextlib.nullcontext()
        with reading:  # checking an entry reads the frame
            feats = self.store.load(frame_idx)
        if feats is None:
            return None
        with self._lock:
            self.disk_hits += 1
            return self._put(frame_idx, feats)

    def cache_vision_features(self, frame_idx: int, features: Features) -> None:
        """Keep the features the encoder computed for a frame (and queue them for the disk store)."""
        with self._lock:
            features = self._put(frame_idx, features)
        if self.store is not None:
            self.store.save(frame_idx, features)

    def clear_all(self) -> None:
        """Forget the features held in memory (the disk store keeps its entries)."""
        with self._lock:
            self._features.clear()
            self._shared.clear()

    def _put(self, frame_idx: int, features: Features) -> Features:
        features = dict(features)
        for key in _SHARED_KEYS:
            if key in features:
                features[key] = self._share(key, features[key])
        self._features[frame_idx] = features
        self._features.move_to_end(frame_idx)
        while len(self._features) > self.max_frames:
            self._features.popitem(last=False)
        return features

    def _share(self, key: str, tensors):
        """Replace frame-independent tensors by the copy already held, if they are equal."""
        import torch

        held = self._shared.get(key)
        if held is not None and len(held) == len(tensors) and all(
            a is b or a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
            for a, b in zip(held, tensors)
        ):
            return held
        # a slice of a batch would keep the whole batch alive: keep a compact copy
        held = [t if t.is_contiguous() else t.contiguous() for t in tensors]
        self._shared[key] = held
        return held


# --------------------------------------------------------------------------- the disk store

def _frame_digest(frame) -> bytes:
    """Hash of a raw frame's pixels, shape and dtype."""
    a = np.ascontiguousarray(frame)
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(memoryview(a).cast("B"))  # type: ignore[arg-type]  # (see _checksum)
    digest = h.digest()
    # an all-zero digest marks an empty entry in the store
    return digest if any(digest) else b"\x01" + digest[1:]


_MODEL_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_hash(network) -> str:
    """Hash of a network's configuration, parameters and buffers.

    Remembered per network and recomputed when a tensor was modified in place (torch counts
    in-place changes in ``Tensor._version``).
    """
    import torch

    tensors = list(network.state_dict().values())
    versions = sum(int(t._version) for t in tensors)
    memo = _MODEL_HASHES.get(network)
    if memo is not None and memo[0] == versions:
        return memo[1]
    h = hashlib.blake2b(digest_size=20)
    h.update(network.config.to_json_string(use_diff=False).encode())
    for name, t in network.state_dict().items():
        h.update(name.encode())
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(memoryview(t.numpy()).cast("B"))
    digest = h.hexdigest()
    _MODEL_HASHES[network] = (versions, digest)
    return digest


def _code_hash() -> str:
    """Hash of the preprocessing code, so that a change to it invalidates stored features."""
    from napari_sam2 import conversions
    from napari_sam2.engine import frames

    h = hashlib.blake2b(digest_size=12)
    for module in (frames, conversions):
        assert module.__file__ is not None  # both are plain .py modules of this package
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def store_key(source: FrameSource, model: Sam2Model) -> dict[str, Any]:
    """Everything that decides a frame's features, except its pixels.

    Parameters
    ----------
    source : FrameSource
        The session's frame source.
    model : Sam2Model
        The session's model.

    Returns
    -------
    dict
        JSON-serialisable description; its hash names the store.
    """
    import torch
    import transformers

    sha = model.info.get("sha256") if isinstance(getattr(model, "info", None), dict) else None
    return {
        "source": source.signature,
        "frames": int(source.n_frames),
        "model": model.signature,
        "weights": sha or _weights_hash(model.network),
        "device": model.device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "preprocessing": _code_hash(),
    }


class DiskFeatureStore:
    """Image features of one stack for one model, on disk (zarr), checked frame by frame.

    Use :meth:`for_session` (or ``Sam2Session(..., disk_cache=folder)``). One folder can hold
    the stores of many stacks and models: each lives in ``<folder>/<key hash>.zarr``, and any of
    them may be deleted at any time. A frame takes the size of its features (uncompressed: they
    do not compress): ~16 MB at 1024 px, ~1 MB at 256 px.

    Layout: ``frames`` is a ``(n_frames, bytes)`` uint8 array with one chunk per frame that
    holds all of the frame's feature tensors, the hash of its raw pixels and a checksum of all
    that, written in one piece, so a torn, stale or damaged chunk is detected when read;
    ``index`` holds the pixel hashes in a small array, to tell which frames have an entry
    without reading them; the frame-independent position encodings are stored once, with their
    checksums in the layout. A damaged frame is recomputed and rewritten; damaged position
    encodings make every frame recompute until the next computed frame rewrites them.

    Writes happen on a background thread (the tracking thread only hands the tensors over);
    :meth:`flush` waits for them. A write that fails (disk full, read-only folder) is logged once
    and switches the store off; tracking goes on.

    Parameters
    ----------
    folder : str or Path
        Where the stores live (created if missing).
    key : dict
        From :func:`store_key`.
    read_frame : callable
        ``read_frame(t)`` returns the raw frame ``t`` (to check a stored entry).
    device : torch.device or str
        Where loaded features are put.
    digests : optional
        The hashes of the frames ``read_frame`` has read, kept by the frame source's read hook
        (see :meth:`for_session`); by default frames are hashed here when read.
    """

    def __init__(self, folder: str | os.PathLike[str], key: dict[str, Any],
                 read_frame: Callable[[int], np.ndarray], device: str | torch.device = "cpu", *,
                 digests: _FrameDigests | None = None) -> None:
        import zarr

        self.key = dict(key)
        text = json.dumps(self.key, sort_keys=True)
        self.name = hashlib.sha256(text.encode()).hexdigest()[:24]
        self.folder = Path(folder).expanduser()
        self.path = self.folder / f"{self.name}.zarr"
        self.n_frames = int(self.key["frames"])
        self.device = device
        self._read_frame = read_frame
        self._digests = _FrameDigests() if digests is None else digests
        self._shared_loaded: dict[str, list] = {}
        self._arrays: dict[str, object] = {}
        self._layout_memo: list | None = None
        self._shared_checked = False
        self._shared_bad = False
        self.enabled = True
        self.writes = 0
        #: frames whose stored chunk failed its checksum (recomputed)
        self.damaged: list[int] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._group = zarr.open_group(str(self.path), mode="a")
            attrs = self._group.attrs
            if attrs.get("key") != self.key or attrs.get("format") != _STORE_FORMAT:
                # another key or an older layout (no checksums): start afresh, never misread
                attrs.update({"key": self.key, "format": _STORE_FORMAT, "layout": None})
        except Exception as err:  # noqa: BLE001 - a cache must never stop the work
            self._disable(f"cannot open the feature store {self.path}: {err}")
        self._queue: queue.Queue = queue.Queue(maxsize=_WRITE_QUEUE)
        self._writer_lock = threading.Lock()
        self._writing = False
        atexit.register(_flush_at_exit, weakref.ref(self))

    @classmethod
    def for_session(cls, folder: str | os.PathLike[str], source: FrameSource,
                    model: Sam2Model) -> DiskFeatureStore:
        """The store for a session's frames and model; hashes raw frames as the source reads them."""
        digests = source.read_hook
        if not isinstance(digests, _FrameDigests):
            # every frame the source reads (for preprocessing or a check) is hashed once, so a
            # frame encoded for the first time is not read again to record its hash
            digests = source.read_hook = _FrameDigests(then=source.read_hook)
        return cls(folder, store_key(source, model), source.read, device=model.device, digests=digests)

    # ------------------------------------------------------------------ lookups
    def _digest(self, t: int) -> bytes:
        d = self._digests.recall(t)
        if d is None:
            frame = self._read_frame(t)
            # a read through the session's source was hashed by its read hook already
            d = self._digests.recall(t) or self._digests(t, frame)
        return d

    def _array(self, name: str):
        """A zarr array of the store (opened once: opening reads its metadata from disk)."""
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self._group[name]
        return arr

    def _layout(self) -> list | None:
        """Where each tensor lies in a frame's chunk: [{key, level, shape, dtype, offset, nbytes}].

        None until the first frame is written.
        """
        if self._layout_memo is None:
            layout = self._group.attrs.get("layout")
            self._layout_memo = list(layout) if isinstance(layout, list) else None
        return self._layout_memo

    def _written_layout(self) -> list:
        """The layout of a store that holds frames (read only after the index says so)."""
        layout = self._layout()
        if layout is None:
            raise _DamagedEntry("the feature store has frames but no layout")
        return layout

    def _stored_digest(self, t: int) -> bytes | None:
        if not self.enabled:
            return None
        try:
            d = bytes(np.asarray(self._array("index")[t]).astype(np.uint8))
        except Exception:  # noqa: BLE001 - no store yet, or an unreadable entry: recompute
            return None
        return d if any(d) else None

    def has_entry(self, t: int) -> bool:
        """Whether frame ``t`` has an entry (its pixels are not checked)."""
        return self._stored_digest(t) is not None

    def load(self, t: int) -> Features | None:
        """Frame ``t``'s features, or None if absent or stale."""
        stored = self._stored_digest(t)
        if stored is None:
            return None
        digest = self._digest(t)
        if stored != digest or self._shared_bad or self._layout() is None:
            return None
        try:
            chunk = np.asarray(self._array("frames")[t])
            if chunk[-2 * _DIGEST_BYTES:-_DIGEST_BYTES].tobytes() != digest:  # overwritten since
                return None
            if _checksum(chunk[:-_DIGEST_BYTES]) != chunk[-_DIGEST_BYTES:].tobytes():
                raise _DamagedEntry(f"frame {t}'s stored features fail their checksum")
            out: dict[str, list] = {}
            for info in self._written_layout():
                if info["shared"]:
                    out[info["key"]] = self._shared(info["key"])
                    continue
                raw = chunk[info["offset"]:info["offset"] + info["nbytes"]]
                out.setdefault(info["key"], []).append(_to_tensor(raw, info, self.device))
        except _DamagedEntry as err:
            self.damaged.append(int(t))
            log.warning("feature store %s: %s (damaged on disk): recomputing frame %s", self.path, err, t)
            return None
        except Exception as err:  # noqa: BLE001 - half-written or damaged entry: recompute
            log.debug("feature store entry %s of %s unreadable: %s", t, self.path, err)
            return None
        return out

    def _shared(self, key: str) -> list:
        """The frame-independent tensors: read once, then the same objects every time.

        The memory cache so keeps one copy of them for all frames.
        """
        if key not in self._shared_loaded:
            tensors = []
            for info in self._written_layout():
                if info["key"] != key:
                    continue
                raw = np.asarray(self._array(f"{key}_{info['level']}")[...])
                if _checksum(raw) != bytes.fromhex(info.get("checksum", "")):
                    # every frame uses them: recompute until a computed frame rewrites them
                    self._shared_bad = True
                    raise _DamagedEntry(f"the shared {key} (level {info['level']}) fail their checksum")
                tensors.append(_to_tensor(raw, info, self.device))
            self._shared_loaded[key] = tensors
        return self._shared_loaded[key]

    # ------------------------------------------------------------------ writes
    def save(self, t: int, features: Features) -> None:
        """Queue frame ``t``'s features for writing (returns at once unless writes lag)."""
        if not self.enabled:
            return
        digest = self._digest(t)
        with self._writer_lock:
            self._queue.put((t, digest, features))
            if not self._writing:
                # the writer ends when the queue runs dry, so an idle store holds no thread
                self._writing = True
                threading.Thread(target=self._write_loop, name="sam2-feature-store", daemon=True).start()

    def flush(self) -> None:
        """Wait until every queued frame is written."""
        self._queue.join()

    def _write_loop(self) -> None:
        import torch

        torch.set_num_threads(1)  # per thread: no second team of threads next to the network's
        while True:
            try:
                t, digest, features = self._queue.get_nowait()
            except queue.Empty:
                with self._writer_lock:
                    if self._queue.empty():
                        self._writing = False
                        return
                continue
            try:
                if self.enabled:
                    self._write(t, digest, features, torch)
                    self.writes += 1
            except Exception as err:  # noqa: BLE001 - a cache must never stop the work
                self._disable(f"cannot write to the feature store {self.path}: {err}")
            finally:
                self._queue.task_done()

    def _write(self, t: int, digest: bytes, features: dict, torch) -> None:
        layout = self._ensure_layout(features, torch)
        parts = [_to_bytes(features[info["key"]][info["level"]], torch)
                 for info in layout if not info["shared"]]
        parts.append(np.frombuffer(digest, np.uint8))
        body = np.concatenate(parts)
        # one chunk with the pixel hash and a checksum at its end, then the index: a reader
        # trusts neither alone, and no flipped bit goes unnoticed
        self._array("frames")[t] = np.concatenate([body, np.frombuffer(_checksum(body), np.uint8)])
        self._array("index")[t] = np.frombuffer(digest, np.uint8)

    def _ensure_layout(self, features: dict, torch) -> list:
        layout = self._layout()
        if layout is not None:
            if not self._shared_checked or self._shared_bad:
                # frame-independent tensors are stored once: make sure they are still the same
                repaired = False
                for info in layout:
                    if info["shared"]:
                        ours = _to_bytes(features[info["key"]][info["level"]], torch)
                        name = f"{info['key']}_{info['level']}"
                        stored = np.asarray(self._array(name)[...])
                        if np.array_equal(stored, ours):
                            continue
                        if _checksum(stored) == bytes.fromhex(info.get("checksum", "")):
                            raise ValueError(f"{info['key']} differ from the stored ones")
                        # damaged on disk: the freshly computed ones replace them
                        self._array(name)[...] = ours
                        info["checksum"] = _checksum(ours).hex()
                        repaired = True
                        log.warning("feature store %s: rewrote the damaged shared %s (level %s)",
                                    self.path, info["key"], info["level"])
                if repaired:
                    self._group.attrs["layout"] = layout
                    self._shared_loaded.clear()
                self._shared_bad = False
                self._shared_checked = True
            return layout
        g = self._group
        layout, offset = [], 0
        for key, tensors in features.items():
            for level, tensor in enumerate(tensors):
                raw = _to_bytes(tensor, torch)
                info = {"key": key, "level": level, "shape": list(tensor.shape),
                        "dtype": str(tensor.dtype).replace("torch.", ""), "shared": key in _SHARED_KEYS,
                        "offset": offset, "nbytes": int(raw.size)}
                if info["shared"]:
                    _create(g, f"{key}_{level}", raw.shape, raw.shape)[...] = raw
                    info["checksum"] = _checksum(raw).hex()
                else:
                    offset += raw.size
                layout.append(info)
        chunk = offset + 2 * _DIGEST_BYTES  # features, pixel hash, checksum
        _create(g, "frames", (self.n_frames, chunk), (1, chunk))
        _create(g, "index", (self.n_frames, _DIGEST_BYTES), (1, _DIGEST_BYTES))
        g.attrs["layout"] = layout
        self._arrays.clear()
        self._layout_memo = layout
        self._shared_checked = True
        return layout

    def _disable(self, why: str) -> None:
        if self.enabled:
            log.warning("%s; features are no longer stored on disk", why)
        self.enabled = False


class _FrameDigests:
    """The hashes of the last frames read: a :class:`~napari_sam2.engine.frames.FrameSource` read hook.

    Parameters
    ----------
    then : callable, optional
        A read hook the source had before, called after hashing.
    """

    def __init__(self, then=None):
        self._then = then
        self.digests: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, t: int) -> bytes | None:
        with self._lock:
            return self.digests.get(int(t))

    def __call__(self, t: int, frame: np.ndarray) -> bytes:
        """Hash and remember frame ``t``; returns its digest."""
        digest = _frame_digest(frame)
        with self._lock:
            self.digests[int(t)] = digest
            self.digests.move_to_end(int(t))
            while len(self.digests) > _DIGEST_MEMORY:
                self.digests.popitem(last=False)
        if self._then is not None:
            self._then(t, frame)
        return digest


def _flush_at_exit(ref) -> None:
    store = ref()
    if store is not None:
        store.flush()


def _to_bytes(tensor, torch) -> np.ndarray:
    """A tensor's bytes (uint8, on the CPU), whatever its dtype (bfloat16 included)."""
    t = tensor.detach().contiguous().to("cpu")
    return t.reshape(-1).view(torch.uint8).numpy()


def _to_tensor(raw: np.ndarray, info: dict, device):
    """Inverse of :func:`_to_bytes`."""
    import torch

    dtype = getattr(torch, info["dtype"])
    t = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.uint8)).view(dtype).reshape(info["shape"])
    if str(device) != "cpu":
        t = t.pin_memory().to(device, non_blocking=True)
    return t


def _create(group, name, shape, chunks):
    """A new uncompressed uint8 zarr array in a group, under zarr 3 or zarr 2."""
    if hasattr(group, "create_array"):  # zarr 3
        return group.create_array(name, shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0,
                                  compressors=None, overwrite=True)
    return group.create_dataset(name, shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0,
                                compressor=None, overwrite=True)
