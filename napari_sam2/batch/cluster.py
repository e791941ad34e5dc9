"""A dask cluster on this machine sized for SAM 2, or a client of an existing scheduler.

On a machine with GPUs (``--device auto`` or ``cuda``), one worker process per GPU, each seeing
only its own GPU (``CUDA_VISIBLE_DEVICES``); otherwise a few CPU worker processes that split the
cores between their torch threads. Every worker runs one stack at a time (one thread): SAM 2's
memory bank and the model belong to the process, and two stacks in one process would only fight
over the same cores or GPU.
"""

from __future__ import annotations

import os

__all__ = ["gpu_count", "local_worker_env", "start_local_cluster", "quiet_shutdown", "connect",
           "dashboard_link"]

#: Default number of CPU workers: enough to overlap one stack's reading and writing with another
#: stack's network passes, few enough that each keeps several torch threads.
_MAX_DEFAULT_CPU_WORKERS = 4


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def gpu_count(device: str = "auto") -> int:
    """GPUs the workers should be spread over (0 for ``--device cpu``/``mps`` or none found)."""
    device = (device or "auto").lower()
    if device not in ("auto", "cuda"):
        return 0
    import torch  # only here: the CPU-only and --scheduler paths never need it on the client

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def local_worker_env(n_workers: int, device: str = "auto", torch_threads: int | None = None):
    """Environment of each local worker process: pinned GPU or CPU thread counts.

    Returns
    -------
    (list of dict, str, int or None)
        One environment per worker, the device the workers use, the torch threads per worker.
    """
    base = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
                                       "PYTHONPATH") if k in os.environ}
    # each worker's own progress bar would garble the batch's: the batch shows stacks and frames
    base["TQDM_DISABLE"] = "1"
    gpus = gpu_count(device)
    if gpus:
        envs = [{**base, "CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(n_workers)]
        return envs, "cuda", torch_threads
    threads = torch_threads or max(1, _cpu_count() // max(1, n_workers))
    envs = [{**base, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            for _ in range(n_workers)]
    return envs, ("cpu" if (device or "auto") == "auto" else device), threads


def default_workers(device: str = "auto") -> int:
    """One worker per GPU, else half the cores (at least 1, at most 4)."""
    gpus = gpu_count(device)
    if gpus:
        return gpus
    return max(1, min(_MAX_DEFAULT_CPU_WORKERS, _cpu_count() // 2))


def start_local_cluster(n_workers: int | None = None, *, device: str = "auto",
                        torch_threads: int | None = None, dashboard_address: str | None = ":8787",
                        memory_limit="auto"):
    """Start worker processes on this machine, listening on 127.0.0.1 only.

    Parameters
    ----------
    n_workers : int, optional
        Default :func:`default_workers`.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``mps``: decides GPU pinning.
    torch_threads : int, optional
        Torch threads per CPU worker (default: the cores divided between the workers).
    dashboard_address : str or None
        Where the dashboard listens (needs ``bokeh``); None for none.

    Returns
    -------
    (distributed.SpecCluster, str, int or None)
        The cluster, the device the workers use, their torch threads.
    """
    from distributed import Nanny, Scheduler, SpecCluster

    n = int(n_workers) if n_workers else default_workers(device)
    if n < 1:
        raise ValueError(f"--workers {n}: give at least 1")
    envs, used_device, threads = local_worker_env(n, device, torch_threads)
    scheduler = {"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard_address": dashboard_address,
        "dashboard": dashboard_address is not None}}
    workers = {f"sam2-{i}": {"cls": Nanny, "options": {
        "nthreads": 1, "host": "127.0.0.1", "env": env, "memory_limit": memory_limit,
        "dashboard": False, "silence_logs": 40}} for i, env in enumerate(envs)}
    cluster = SpecCluster(scheduler=scheduler, workers=workers, name="napari-sam2", silence_logs=40)
    return cluster, used_device, threads


def quiet_shutdown(client) -> None:
    """Keep the workers of a cluster about to close from reporting its closing as errors.

    A worker whose heartbeat meets a scheduler that is already closing logs "Failed to
    communicate with scheduler during heartbeat." with a traceback, at ERROR level: a race in
    every shutdown, not a failure, but it ends a successful batch with a traceback. Called just
    before the batch closes its own cluster (never a cluster the user passed in).
    """
    import threading

    def run():
        try:
            client.run(_silence_distributed)
        except Exception:  # the workers are gone already: nothing left to say anything
            pass

    # a worker busy in a long torch call answers late: the batch does not wait for it long
    thread = threading.Thread(target=run, name="napari-sam2 quiet shutdown", daemon=True)
    thread.start()
    thread.join(timeout=5)


def _silence_distributed() -> None:
    import logging

    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def connect(address: str, timeout: float = 30):
    """A client of an existing scheduler (``tcp://HOST:PORT``); a clear error when unreachable."""
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        reason = " ".join(str(err).split())
        raise OSError(f"--scheduler {address}: cannot reach the dask scheduler ({reason}); "
                      "is it running, and is the address tcp://HOST:PORT?") from None


def dashboard_link(client) -> str | None:
    """The dashboard's address, or None when the scheduler serves none (bokeh not installed)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        import importlib.util

        link = client.dashboard_link
        if importlib.util.find_spec("bokeh") is None:
            link += " (its plots need bokeh: pip install bokeh)"
        return link
    except Exception:  # the dashboard is a convenience: never fail a batch over it
        return None
