"""Benchmark the engine against transformers' own SAM 2 video session, side by side.

Both run in one process on the same random-initialised weights and the same lazily generated
frames (see ``setups.py``). Figures:

* click-to-mask latency: on a new frame, on the same frame again (cached), and back on a frame
  clicked a few frames earlier;
* propagation frames per second for 1, 3 and 10 objects, and the engine's overhead over the
  network's own compute (time inside the network's methods vs wall time);
* time to re-propagate after one correction;
* the on-disk feature store (a stack opened again), prefetching with a slow reader, batched
  encoding;
* peak RSS against stack length, each length in a fresh subprocess.

Usage::

    python benchmarks/bench_engine.py --quick          # a few minutes on a 2-core CPU
    python benchmarks/bench_engine.py                  # the full set (an hour or more on CPU)
    python benchmarks/bench_engine.py --device cuda    # the four SAM 2.1 sizes at 1024 px

It prints a table and writes everything measured to ``benchmarks/results/*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from setups import (  # noqa: E402
    CUDA_CONFIGS,
    FAMILY_CONFIGS,
    Baseline,
    GeneratedStack,
    available_memory,
    build_model,
    load_average,
    machine_info,
)

#: Frames per second: three significant digits (0.183 at 1024 px on a CPU, 24.3 at 256 px).
FPS = "{:.3g}"
#: The network's own methods: time spent inside them is "model compute".
NETWORK_METHODS = ("get_image_features", "_prepare_memory_conditioned_features", "_single_frame_forward",
                   "_use_mask_as_output", "_encode_new_memory")


# --------------------------------------------------------------------------- helpers

class Clock:
    """Wall-clock timing that waits for the GPU when there is one."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


@contextlib.contextmanager
def network_timer(net, clock: Clock):
    """Accumulate the time spent inside the network's methods (the raw model compute)."""
    spent = {"s": 0.0, "depth": 0}
    originals = {}
    for name in NETWORK_METHODS:
        real = getattr(net, name)
        originals[name] = real

        def timed(*args, _real=real, **kwargs):
            outer = spent["depth"] == 0
            if outer:
                t0 = clock.now()
            spent["depth"] += 1
            try:
                return _real(*args, **kwargs)
            finally:
                spent["depth"] -= 1
                if outer:
                    spent["s"] += clock.now() - t0

        setattr(net, name, timed)
    try:
        yield spent
    finally:
        for name in NETWORK_METHODS:
            delattr(net, name)


def per_frame(stamps) -> list[float]:
    return [b - a for a, b in zip(stamps, stamps[1:])]


def med(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def side_for(config: str) -> int:
    return 512


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurements

def bench_clicks(model, config, clock, repeats: int) -> dict:
    """Click latency: new frame, same frame again, and a frame clicked a few frames earlier."""
    from napari_sam2 import Sam2Session

    n = repeats + 2
    stack = GeneratedStack(n, side_for(config))
    engine = Sam2Session(model, stack)
    base = Baseline(model, stack, model.image_size)
    res = {side: {"new": [], "cached": [], "revisit": []} for side in ("engine", "baseline")}
    # warm-up on the last frame (first calls build kernels)
    p = stack.centers(n - 1, 1)[0]
    engine.add_points(n - 1, 1, [p], [1])
    base.click(n - 1, 1, [p], [1])
    for f in range(repeats):
        p, q = stack.centers(f, 2)
        # f=f: each click is made on this iteration's frame (the lambdas run within it)
        for name, click in (("engine", lambda pts, labs, f=f: engine.add_points(f, 1, pts[-1:], labs[-1:])),
                            ("baseline", lambda pts, labs, f=f: base.click(f, 1, pts, labs))):
            t0 = clock.now()
            click([p], [1])
            t1 = clock.now()
            click([p, q], [1, 0])  # a second click refines the mask
            t2 = clock.now()
            res[name]["new"].append(t1 - t0)
            res[name]["cached"].append(t2 - t1)
    # back to the first frame after clicking on others: the engine keeps the last 8 frames'
    # features, transformers' session keeps one
    for f in range(min(repeats, 3)):
        p, q, r = stack.centers(f, 3)
        t0 = clock.now()
        engine.add_points(f, 1, [r], [1])
        t1 = clock.now()
        base.click(f, 1, [p, q, r], [1, 0, 1])
        t2 = clock.now()
        res["engine"]["revisit"].append(t1 - t0)
        res["baseline"]["revisit"].append(t2 - t1)
    res["baseline_preload_s"] = base.preload_s
    return res


def _prompt(session, stack, k, baseline=False):
    for i, p in enumerate(stack.centers(0, k)):
        if baseline:
            session.click(0, i + 1, [p], [1])
        else:
            session.add_points(0, i + 1, [p], [1])


def bench_propagation(model, config, clock, n_objects: int, n_frames: int, *, repeats: int = 1,
                      with_prefetch=False) -> dict:
    """Frames per second through a forward propagation; model compute vs wall time.

    Each variant runs ``repeats`` times, in alternating order, and keeps its fastest run (the
    machine may be shared: the best run is the least disturbed one).
    """
    from napari_sam2 import Sam2Session

    stack = GeneratedStack(n_frames, side_for(config))
    out = {"objects": n_objects, "frames": n_frames, "repeats": repeats}
    variants = [("engine", {})] + ([("engine_prefetch2", {"prefetch": 2})] if with_prefetch else [])
    variants.append(("baseline", None))
    for round_ in range(repeats):
        for name, kwargs in (variants if round_ % 2 == 0 else variants[::-1]):
            if kwargs is None:
                session = Baseline(model, stack, model.image_size)
                _prompt(session, stack, n_objects, baseline=True)
                frames = session.propagate()
            else:
                session = Sam2Session(model, stack, **kwargs)
                _prompt(session, stack, n_objects)
                frames = session.propagate("forward")
            with network_timer(model.network, clock) as spent:
                stamps = [clock.now()]
                net_at = [0.0]
                for _frame, _masks in frames:
                    stamps.append(clock.now())
                    net_at.append(spent["s"])
            walls = per_frame(stamps)[1:]  # the first item is the prompted frame itself
            nets = per_frame(net_at)[1:]
            mean_wall, mean_net = float(np.mean(walls)), float(np.mean(nets))
            run = {
                # throughput: all frames over all their time (a median would hide batched work)
                "s_per_frame": mean_wall,
                "fps": 1.0 / mean_wall,
                "network_s_per_frame": mean_net,
                "overhead": mean_wall / mean_net - 1.0 if mean_net > 0 else float("nan"),
                "median_s_per_frame": med(walls),
                "walls": walls,
                "network": nets,
            }
            if kwargs is None:
                run["preload_s"] = session.preload_s
            best = out.get(name)
            if best is None or run["s_per_frame"] < best["s_per_frame"]:
                out[name] = run
            log(f"  {config} propagate {n_objects} obj {name}: {mean_wall:.3f} s/frame")
            del session, frames
    return out


def bench_repropagation(model, config, clock, n_frames: int) -> dict:
    """Correct one frame in the middle, re-propagate forward from it."""
    from napari_sam2 import Sam2Session

    stack = GeneratedStack(n_frames, side_for(config))
    c = n_frames // 2
    p = stack.centers(0, 1)[0]
    pc, qc = stack.centers(c, 2)
    out = {"frames": n_frames, "corrected_frame": c, "repropagated_frames": n_frames - c}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in (("engine", {}), ("engine_disk", {"disk_cache": tmp}), ("baseline", None)):
            if kwargs is None:
                s = Baseline(model, stack, model.image_size)
                s.click(0, 1, [p], [1])
                list(s.propagate())
                t0 = clock.now()
                s.click(c, 1, [pc, qc], [1, 0])
                list(s.propagate(start=c))
            else:
                s = Sam2Session(model, stack, **kwargs)
                s.add_points(0, 1, [p], [1])
                list(s.propagate("forward"))
                if s.cache.store is not None:
                    s.cache.store.flush()
                t0 = clock.now()
                s.add_points(c, 1, [qc], [0])
                list(s.propagate("forward", start=c))
            out[name] = {"s": clock.now() - t0}
            log(f"  {config} re-propagate {name}: {out[name]['s']:.2f} s")
    return out


def bench_disk(model, config, clock, n_frames: int) -> dict:
    """The on-disk feature store: writing it, and a stack opened again."""
    from napari_sam2 import Sam2Session

    stack = GeneratedStack(n_frames, side_for(config))
    p = stack.centers(0, 1)[0]
    out = {"frames": n_frames}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("cold", "warm"):
            s = Sam2Session(model, stack, disk_cache=tmp)
            f = n_frames - 1
            t0 = clock.now()
            s.add_points(f, 2, [stack.centers(f, 1)[0]], [1])
            click = clock.now() - t0
            s.remove_object(2)
            s.add_points(0, 1, [p], [1])
            stamps = [clock.now()]
            for _ in s.propagate("forward"):
                stamps.append(clock.now())
            t0 = clock.now()
            s.cache.store.flush()
            out[name] = {"click_s": click, "s_per_frame": float(np.mean(per_frame(stamps)[1:])),
                         "flush_s": clock.now() - t0, "disk_hits": s.cache.disk_hits}
            log(f"  {config} disk {name}: click {click:.3f} s, {out[name]['s_per_frame']:.3f} s/frame")
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        out["bytes_per_frame"] = size / n_frames
    return out


def bench_prefetch(model, config, clock, n_frames: int, delay: float, batches=(1, 4)) -> dict:
    """Prefetching with a slow reader; batched encoding."""
    from napari_sam2 import Sam2Session

    out = {"frames": n_frames, "read_delay_s": delay}
    cases = [("slow_reader", delay, {"prefetch": 0}), ("slow_reader_prefetch2", delay, {"prefetch": 2})]
    cases += [(f"encode_batch{b}", 0.0, {"encode_batch": b}) for b in batches]
    for name, d, kwargs in cases:
        stack = GeneratedStack(n_frames, side_for(config), delay=d)
        s = Sam2Session(model, stack, **kwargs)
        _prompt(s, stack, 1)
        stamps = [clock.now()]
        for _ in s.propagate("forward"):
            stamps.append(clock.now())
        walls = per_frame(stamps)[1:]
        out[name] = {"s_per_frame": float(np.mean(walls)), "median_s_per_frame": med(walls)}
        log(f"  {config} {name}: {out[name]['s_per_frame']:.3f} s/frame")
    return out


# --------------------------------------------------------------------------- peak RSS (subprocesses)

def rss_worker(spec: dict) -> dict:
    """Run in a fresh process: one propagation over ``length`` frames; its memory use.

    RSS is sampled after every frame; ``start`` is the RSS once the model is built (the process
    peak of building it, ru_maxrss, is reported apart: it does not depend on the stack).
    """
    import resource

    import psutil
    import torch

    from napari_sam2 import Sam2Session

    torch.set_num_threads(spec["threads"])
    model = build_model(spec["config"], "cpu")
    stack = GeneratedStack(spec["length"], spec["side"])
    p = stack.centers(0, 1)[0]
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = start
    t0 = time.perf_counter()
    if spec["impl"] == "baseline":
        s = Baseline(model, stack, model.image_size)
        s.click(0, 1, [p], [1])
        frames = s.propagate()
    else:
        s = Sam2Session(model, stack)
        s.add_points(0, 1, [p], [1])
        frames = s.propagate("forward")
    n = 0
    for _ in frames:
        n += 1
        peak = max(peak, proc.memory_info().rss)
    return {"peak_rss_mib": peak / 2**20, "start_rss_mib": start / 2**20,
            "growth_mib": (peak - start) / 2**20, "frames": n, "seconds": time.perf_counter() - t0,
            "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_rss(config: str, lengths, threads: int, side: int) -> dict:
    out = {}
    for impl in ("engine", "baseline"):
        for n in lengths:
            if impl == "baseline":
                # it holds every preprocessed frame and all per-frame state: ~2.5 MiB a frame
                # at 256 px measured (--quick), scaling with the model's pixels
                s = build_size(config)
                need = n * 2.5 * 2**20 * (s / 256) ** 2
                if need > 0.6 * available_memory():
                    out[f"{impl}_{n}"] = {"skipped": f"needs ~{need / 2**30:.1f} GiB"}
                    log(f"  rss {impl} {n}: skipped (needs ~{need / 2**30:.1f} GiB)")
                    continue
            spec = {"impl": impl, "length": n, "config": config, "threads": threads, "side": side}
            proc = subprocess.run([sys.executable, __file__, "--rss-worker", json.dumps(spec)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                out[f"{impl}_{n}"] = {"failed": proc.stderr.strip().splitlines()[-1:] or ["?"]}
                log(f"  rss {impl} {n}: failed {proc.stderr[-300:]}")
                continue
            out[f"{impl}_{n}"] = json.loads(proc.stdout.strip().splitlines()[-1])
            log(f"  rss {impl} {n}: {out[f'{impl}_{n}']['peak_rss_mib']:.0f} MiB peak "
                f"({out[f'{impl}_{n}']['seconds']:.0f} s)")
    return out


def compile_network(model, clock) -> None:
    """``torch.compile`` the image encoder and memory attention, shared by both sides.

    Then run a short propagation, so that compiling is not timed as tracking.
    """
    import torch

    from napari_sam2 import Sam2Session

    net = model.network
    net.vision_encoder = torch.compile(net.vision_encoder, dynamic=False)
    # the memory bank grows over the first frames: its length varies
    net.memory_attention = torch.compile(net.memory_attention, dynamic=True)
    stack = GeneratedStack(10, 256)
    s = Sam2Session(model, stack)
    _prompt(s, stack, 1)
    for _ in s.propagate("forward"):
        pass


def build_size(config: str) -> int:
    return {"small": 256, "sam3-small": 224, "edgetam-small": 256, "sam3-1008": 1008}.get(config, 1024)


# --------------------------------------------------------------------------- plan and table

def plan(quick: bool, device: str) -> dict:
    """How much of each measurement runs, per configuration."""
    if device == "cuda":
        return {cfg: dict(clicks=5, objects=(1, 3, 10), frames=60, repeats=2, repro=40, disk=30, prefetch=30,
                          batches=(1, 4, 8)) for cfg in CUDA_CONFIGS}
    if quick:
        return {
            "small": dict(clicks=5, objects=(1, 3, 10), frames=14, repeats=2, repro=12, disk=10, prefetch=12,
                          batches=(1, 4), rss=(100, 400)),
            "tiny-1024": dict(clicks=2, objects=(1,), frames=4, repeats=1, repro=6, disk=0, prefetch=0,
                              batches=()),
        }
    return {
        "small": dict(clicks=8, objects=(1, 3, 10), frames=30, repeats=2, repro=30, disk=30, prefetch=30,
                      batches=(1, 2, 4), rss=(100, 500, 1000, 5000)),
        "tiny-1024": dict(clicks=4, objects=(1, 3, 10), frames=10, repeats=1, repro=10, disk=8, prefetch=8,
                          batches=(1, 2)),
    }


def run(args) -> dict:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(device)
    results = {"machine": machine_info(device), "quick": args.quick, "configs": {}}
    todo = plan(args.quick, device)
    if args.configs:
        wanted = args.configs.split(",")
        # SAM 3 tracker and EdgeTAM run only when named (--configs sam3-small,edgetam-small)
        families = {c: dict(clicks=3, objects=(1, 10), frames=60 if device == "cuda" else 8, repeats=1,
                            repro=8, disk=0, prefetch=0, batches=()) for c in wanted if c in FAMILY_CONFIGS}
        todo = {k: v for k, v in todo.items() if k in wanted}
        todo.update(families)
    for config, p in todo.items():
        log(f"== {config}")
        model = build_model(config, device)
        r = results["configs"][config] = {"image_size": model.image_size, "compiled": args.compile}
        t0 = time.perf_counter()
        if args.compile:
            compile_network(model, clock)
            r["compile_s"] = time.perf_counter() - t0
            log(f"  compiled ({r['compile_s']:.0f} s)")
        r["clicks"] = bench_clicks(model, config, clock, p["clicks"])
        log(f"  clicks done ({time.perf_counter() - t0:.0f} s)")
        r["propagation"] = [bench_propagation(model, config, clock, k, p["frames"], repeats=p["repeats"],
                                              with_prefetch=(k == 1))
                            for k in p["objects"]]
        r["repropagation"] = bench_repropagation(model, config, clock, p["repro"])
        if p.get("disk"):
            r["disk"] = bench_disk(model, config, clock, p["disk"])
        if p.get("prefetch"):
            r["prefetch"] = bench_prefetch(model, config, clock, p["prefetch"], delay=0.03,
                                           batches=p["batches"])
        if p.get("rss") and not args.skip_rss:
            r["rss"] = bench_rss(config, p["rss"], torch.get_num_threads(), 256)
        r["seconds"] = time.perf_counter() - t0
        del model
    results["machine"]["load_average_end"] = load_average()
    return results


def table(results: dict) -> str:
    """The results as a markdown table (what docs/performance.md shows)."""
    rows = ["| configuration | figure | engine | transformers | ratio engine / transformers |",
            "|---|---|---|---|---|"]

    def show(x, unit, fmt, rate):
        if x != x:
            return "-"
        text = fmt.format(x) + unit
        if rate and x < 1:  # a slow frame rate: seconds per frame read better
            text += f" ({1 / x:.2f} s/frame)"
        return text

    def row(cfg, what, e, b, unit, ratio=True, fmt="{:.3f}"):
        rate = fmt == FPS and not unit
        es, bs = show(e, unit, fmt, rate), show(b, unit, fmt, rate)
        rs = f"{e / b:.2f}x" if ratio and e == e and b == b and b else ""
        rows.append(f"| {cfg} | {what} | {es} | {bs} | {rs} |")

    for cfg, r in results["configs"].items():
        c = r["clicks"]
        for kind, label in (("new", "click on a new frame"), ("cached", "click on the same frame again"),
                            ("revisit", "click back on a frame 3 frames ago")):
            row(cfg, label + " (s)", med(c["engine"][kind]), med(c["baseline"][kind]), " s")
        for pr in r["propagation"]:
            k = pr["objects"]
            row(cfg, f"propagation, {k} object{'s' * (k > 1)} (frames/s)", pr["engine"]["fps"],
                pr["baseline"]["fps"], "", fmt=FPS)
            if "engine_prefetch2" in pr:
                row(cfg, f"propagation, {k} object, prefetch=2 (frames/s)", pr["engine_prefetch2"]["fps"],
                    pr["baseline"]["fps"], "", fmt=FPS)
            if k == 1:
                e, b = pr["engine"], pr["baseline"]
                rows.append(f"| {cfg} | per frame, 1 object: network compute / wall | "
                            f"{e['network_s_per_frame']:.3f} / {e['s_per_frame']:.3f} s "
                            f"(overhead {100 * e['overhead']:+.1f} %) | "
                            f"{b['network_s_per_frame']:.3f} / {b['s_per_frame']:.3f} s "
                            f"(overhead {100 * b['overhead']:+.1f} %) | |")
                rows.append(f"| {cfg} | preprocessing of the whole stack before the first click | "
                            f"none (per frame, when needed: inside the wall time above) | "
                            f"{b['preload_s']:.2f} s ({b['preload_s'] / pr['frames']:.3f} s/frame) | |")
        rp = r["repropagation"]
        what = f"re-propagate after a correction ({rp['repropagated_frames']} frames, s)"
        row(cfg, what, rp["engine"]["s"], rp["baseline"]["s"], " s", fmt="{:.3g}")
        row(cfg, what.replace("(", "(disk cache, "), rp["engine_disk"]["s"], rp["baseline"]["s"], " s",
            fmt="{:.3g}")
        if "disk" in r:
            d = r["disk"]
            row(cfg, "disk cache: click on a new frame, features on disk (s)", d["warm"]["click_s"],
                med(c["baseline"]["new"]), " s")
            row(cfg, "disk cache: propagation, stack seen before (frames/s)", 1 / d["warm"]["s_per_frame"],
                r["propagation"][0]["baseline"]["fps"], "", fmt=FPS)
            row(cfg, "disk cache: propagation while writing it (frames/s)", 1 / d["cold"]["s_per_frame"],
                r["propagation"][0]["baseline"]["fps"], "", fmt=FPS)
        if "prefetch" in r:
            pf = r["prefetch"]
            d = pf["read_delay_s"]
            row(cfg, f"reader taking {1000 * d:.0f} ms/frame, no prefetch (frames/s)",
                1 / pf["slow_reader"]["s_per_frame"], float("nan"), "", fmt=FPS)
            row(cfg, f"reader taking {1000 * d:.0f} ms/frame, prefetch=2 (frames/s)",
                1 / pf["slow_reader_prefetch2"]["s_per_frame"], float("nan"), "", fmt=FPS)
            for key in sorted(k for k in pf if k.startswith("encode_batch")):
                row(cfg, f"propagation, {key.replace('encode_batch', 'encode_batch=')} (frames/s)",
                    1 / pf[key]["s_per_frame"], float("nan"), "", fmt=FPS)
        if "rss" in r:
            for key, v in r["rss"].items():
                impl, n = key.rsplit("_", 1)
                if impl != "engine":
                    continue
                b = r["rss"].get(f"baseline_{n}", {})

                def mem(x):
                    if "peak_rss_mib" not in x:
                        return x.get("skipped") or str(x.get("failed", "-"))
                    return f"{x['peak_rss_mib']:.0f} MiB (+{x['growth_mib']:.0f} MiB)"

                rows.append(f"| {cfg} | peak RSS while propagating {n} frames (growth from the start) | "
                            f"{mem(v)} | {mem(b)} | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter runs (a few minutes on CPU)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--configs", default="", help="comma-separated subset, e.g. small; also "
                    "sam3-small, edgetam-small, sam3-1008, edgetam-1024 (the other families)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-rss", action="store_true", help="leave out the peak-RSS subprocess runs")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the image encoder and memory attention first (both sides)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON results")
    ap.add_argument("--table", metavar="JSON", help="print the table of an earlier results file and exit")
    ap.add_argument("--rss-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_worker:
        print(json.dumps(rss_worker(json.loads(args.rss_worker))))
        return 0
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    results = run(args)
    text = table(results)
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['logical_cores']} logical cores, torch {m['torch']} with {m['torch_threads']} "
          f"threads, transformers {m['transformers']}, device {m['device']}"
          f"{', ' + m['gpu'] if 'gpu' in m else ''}; load average {m['load_average_start']} -> "
          f"{m['load_average_end']}\n")
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("quick-" if args.quick else "") + ("compiled-" if args.compile else "")
    path = out / f"bench-{tag}{m['device']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results["table"] = text
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
