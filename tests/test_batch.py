"""``napari-sam2 batch`` / ``run_batch`` on real dask clusters of worker processes.

Every stack's files are compared byte for byte (TIFF, CSV) or array for array (zarr) with what
``napari-sam2 segment`` writes for it. The cluster tests share one 2-worker local cluster; one
test runs the command with its own cluster, one starts ``dask scheduler`` and ``dask worker``
processes itself. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed")

from napari_sam2.batch import run_batch  # noqa: E402
from napari_sam2.batch.stacks import make_jobs, read_list  # noqa: E402
from napari_sam2.cli import main  # noqa: E402
from napari_sam2.errors import BatchInputError  # noqa: E402
from napari_sam2.samples import make_cells_timelapse  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                      os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
NAMES = ("a01", "a02", "b01")


def napari_sam2_cmd():
    return [sys.executable, "-m", "napari_sam2.cli"]


def write_stack(path, n_frames, seed):
    cells = make_cells_timelapse(n_frames=n_frames, shape=(64, 64), n_cells=3, seed=seed)
    tifffile.imwrite(path, cells.image, imagej=True, metadata={"axes": "TYX"})


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model_dir):
    """Three small stacks, a longer one, a session file and serial `segment` results for each."""
    d = tmp_path_factory.mktemp("batch-in")
    for seed, name in enumerate(NAMES):
        write_stack(d / f"{name}.tif", 6, seed)
    write_stack(d / "long.tif", 16, 7)
    (d / "masks").mkdir()
    mask = np.zeros((64, 64), np.uint8)
    mask[30:44, 20:40] = 1
    tifffile.imwrite(d / "masks" / "m.tif", mask)
    session = d / "session.json"
    session.write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "name": "one",
         "prompts": [{"frame": 0, "points": [[20.0, 20.0], [50, 50]], "labels": [1, 0]}]},
        {"id": 4, "name": "four", "prompts": [{"frame": 2, "mask": "masks/m.tif"}]}]}))
    ref = tmp_path_factory.mktemp("batch-serial")
    model = ["--model", str(tiny_model_dir)]
    for name in NAMES:
        assert main(["segment", str(d / f"{name}.tif"), "--prompts", str(session), "--out",
                     str(ref / f"{name}_labels.tif"), "--stats", str(ref / f"{name}_stats.csv"), *model]) == 0
    assert main(["segment", str(d / "long.tif"), "--prompts", str(session), "--out",
                 str(ref / "long_labels.zarr"), *model]) == 0
    assert main(["segment", str(d / "long.tif"), "--prompts", str(session), "--out",
                 str(ref / "long_labels.tif"), *model]) == 0
    return {"dir": d, "session": session, "ref": ref, "model": str(tiny_model_dir)}


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes (1 torch thread each), as `napari-sam2 batch` starts."""
    from distributed import Client

    from napari_sam2.batch.cluster import start_local_cluster

    cluster, device, threads = start_local_cluster(2, device="cpu", torch_threads=1, dashboard_address=None,
                                                   memory_limit="4GB")
    assert device == "cpu" and threads == 1
    c = Client(cluster, timeout=60)
    try:
        c.wait_for_workers(2, timeout=120)
        yield c
    finally:
        c.close(timeout=30)
        cluster.close(timeout=30)


def same_files(a: Path, b: Path):
    assert a.read_bytes() == b.read_bytes(), f"{a} differs from {b}"


def partials(folder: Path):
    return sorted(p.name for p in folder.glob(".*partial*"))


def by_input(report):
    return {Path(r["input"]).stem: r for r in report}


def write_seeds(path, discs):
    """A 2-D seed label image: {id: (row, col, radius)}."""
    yy, xx = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.uint16)
    for i, (cy, cx, r) in discs.items():
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = i
    tifffile.imwrite(path, labels)
    return path


# --------------------------------------------------------------------------- no cluster needed
def test_list_files_lines_and_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "list.txt").write_text("# plate 1\nsub/a.tif\n\n  /abs/b.tif  \n")
    assert ([e["input"] for e in read_list(tmp_path / "list.txt")]
            == [str(tmp_path / "sub" / "a.tif"), "/abs/b.tif"])
    (tmp_path / "list.csv").write_text("input,prompts,output\nsub/a.tif,p.json,\nc.tif,,well_c.tif\n")
    rows = read_list(tmp_path / "list.csv")
    assert rows == [{"input": str(tmp_path / "sub" / "a.tif"), "prompts": str(tmp_path / "p.json"),
                     "seeds": None, "output": None},
                    {"input": str(tmp_path / "c.tif"), "prompts": None, "seeds": None,
                     "output": "well_c.tif"}]
    (tmp_path / "seeds.csv").write_text("input,seeds\nsub/a.tif,s/a_seg.tif\n")
    assert read_list(tmp_path / "seeds.csv")[0]["seeds"] == str(tmp_path / "s" / "a_seg.tif")
    (tmp_path / "bad.csv").write_text("input,promts\na.tif,p.json\n")
    with pytest.raises(BatchInputError, match="unknown column.*promts"):
        read_list(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("a.tif\n")
    with pytest.raises(BatchInputError, match="'input' column"):
        read_list(tmp_path / "nohead.csv")


def test_output_names_and_collisions(tmp_path):
    jobs = make_jobs(["x/cells.ome.tif", "y/zstack"], tmp_path, prompts="p.json", stats=True)
    assert [j.output.name for j in jobs] == ["cells_labels.tif", "zstack_labels.tif"]
    assert [j.stats.name for j in jobs] == ["cells_stats.csv", "zstack_stats.csv"]
    assert make_jobs(["a.tif"], tmp_path, prompts="p.json", fmt="zarr")[0].output.name == "a_labels.zarr"
    with pytest.raises(BatchInputError, match="would both write.*'output' column"):
        make_jobs(["A01/img.tif", "A02/img.tif"], tmp_path, prompts="p.json")
    named = make_jobs([{"input": "A01/img.tif", "prompts": None, "output": "A01.tif"},
                       {"input": "A02/img.tif", "prompts": None, "output": "A02.tif"}],
                      tmp_path, prompts="p.json")
    assert [j.output.name for j in named] == ["A01.tif", "A02.tif"]
    with pytest.raises(BatchInputError, match="no prompts for 'a.tif'"):
        make_jobs(["a.tif"], tmp_path)


def test_settings_key_follows_input_prompts_and_options(data, tmp_path):
    d, session = data["dir"], str(data["session"])

    def key(**kw):
        opts = {"contrast": kw.pop("contrast", None), "precision": kw.pop("precision", None)}
        jobs = make_jobs([str(d / "a01.tif")], tmp_path, prompts=kw.pop("prompts", session), options=opts)
        return jobs[0].key

    base = key()
    assert key() == base
    assert key(contrast=[0, 255]) != base
    # "auto" is what every earlier batch ran with: their keys stay; another precision is another key
    assert key(precision="auto") == base
    assert key(precision="bfloat16") != base != key(precision="float32") != key(precision="bfloat16")
    other = tmp_path / "other.json"
    other.write_text(data["session"].read_text().replace("20.0, 20.0", "21.0, 20.0"))
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "m.tif").write_bytes((d / "masks" / "m.tif").read_bytes())
    assert key(prompts=str(other)) != base
    copy = tmp_path / "copy.tif"
    copy.write_bytes((d / "a01.tif").read_bytes())
    assert make_jobs([str(copy)], tmp_path, prompts=session)[0].key != base  # another file


def test_workers_load_the_chosen_precision_once(data, tmp_path):
    import torch

    from napari_sam2.batch.worker import ModelCache, _segment_args

    jobs = make_jobs([str(data["dir"] / "a01.tif")], tmp_path, prompts=str(data["session"]),
                     options={"model": data["model"], "device": "cpu", "precision": "bfloat16"})
    args = _segment_args(jobs[0].__dict__, tmp_path / "o.tif", None)
    assert args.precision == "bfloat16"
    cache = ModelCache()
    from napari_sam2.io.session_file import read_session

    settings = read_session(data["session"]).settings
    model = cache.get(args, settings)
    assert model.autocast_dtype == torch.bfloat16
    assert cache.get(args, settings) is model and cache.loads == 1
    args.precision = "float32"
    assert cache.get(args, settings).autocast_dtype is None and cache.loads == 2


def test_usage_errors_exit_2(data, tmp_path, capsys):
    d, session = data["dir"], str(data["session"])
    cases = [
        ([], "no stacks to segment"),
        ([str(d / "a01.tif"), "--prompts", str(tmp_path / "nope.json")], "does not exist"),
        ([str(d / "a01.tif"), "--prompts", session, "--workers", "0"], "--workers 0"),
        ([str(d / "a01.tif"), "--prompts", session, "--scheduler", "127.0.0.1:8786"], "tcp://HOST:PORT"),
        ([str(d / "a01.tif"), str(d / "a01.tif"), "--prompts", session], "would both write"),
        ([str(d / "a01.tif"), "--prompts", session, "--contrast", "5", "1"], "LO must be below HI"),
    ]
    for extra, message in cases:
        assert main(["batch", "--out-dir", str(tmp_path / "out"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def test_existing_output_without_record_is_never_overwritten(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "a01_labels.tif"
    mine.write_bytes(b"the user's own file")
    # nothing to run: no cluster is started
    report = run_batch([str(data["dir"] / "a01.tif"), str(tmp_path / "gone.tif")], out,
                       prompts=str(data["session"]), model=data["model"], progress=False)
    assert [r["status"] for r in report] == ["failed", "failed"]
    assert report[1]["error"] == f"input '{tmp_path / 'gone.tif'}' does not exist"
    assert "never overwritten" in report[0]["error"] and "a01_labels.tif" in report[0]["error"]
    assert mine.read_bytes() == b"the user's own file"
    assert json.loads((out / "batch-report.json").read_text()) == report


def test_seeds_dir_names_keys_and_missing_seed_file(data, tmp_path):
    d, seeds = data["dir"], tmp_path / "seeds"
    seeds.mkdir()
    write_seeds(seeds / "a01.tif", {7: (20, 20, 8)})
    write_seeds(seeds / "a02_labels.tif", {5: (40, 40, 9)})
    inputs = [str(d / f"{n}.tif") for n in NAMES]
    jobs = make_jobs(inputs, tmp_path / "out", seeds_dir=str(seeds))
    assert [Path(j.seeds).name if j.seeds else None for j in jobs] == ["a01.tif", "a02_labels.tif", None]
    assert [j.error is None for j in jobs] == [True, True, False]
    assert "no seed file for" in jobs[2].error and "b01_labels.tif" in jobs[2].error
    assert "no prompts" in jobs[2].error
    with_prompts = make_jobs(inputs, tmp_path / "out", seeds_dir=str(seeds), prompts=str(data["session"]))
    assert with_prompts[2].error is None and with_prompts[2].seeds is None  # prompts alone
    # the key follows the seed file's content and the auto-seed options
    key = jobs[0].key
    write_seeds(seeds / "a01.tif", {7: (20, 21, 8)})
    assert make_jobs(inputs[:1], tmp_path / "out", seeds_dir=str(seeds))[0].key != key
    auto = [make_jobs(inputs[:1], tmp_path / "out", options={"auto_seed": 0, "auto_seed_iou": t})[0].key
            for t in (0.8, 0.5)]
    assert auto[0] != auto[1]
    # the input folder as --seeds-dir: the input itself is not its own seed file
    assert make_jobs(inputs[:1], tmp_path / "out", seeds_dir=str(d))[0].error.startswith("no seed file")


def test_seed_usage_errors_exit_2(data, tmp_path, capsys):
    d = data["dir"]
    cases = [
        (["--seeds-dir", str(tmp_path / "nope")], "is not a folder"),
        (["--seeds-dir", str(tmp_path), "--auto-seed", "0"], "choose --seeds-dir or --auto-seed"),
        (["--auto-seed", "0", "--auto-seed-iou", "2"], "--auto-seed-iou 2"),
        (["--prompts", str(data["session"]), "--seed-frame", "1"], "--seed-frame needs --seeds-dir"),
    ]
    for extra, message in cases:
        assert main(["batch", str(d / "a01.tif"), "--out-dir", str(tmp_path / "out"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- on a local cluster
def test_two_workers_match_serial_segment(data, client, tmp_path):
    d, ref = data["dir"], data["ref"]
    out = tmp_path / "out"
    report = run_batch([str(d / f"{n}.tif") for n in NAMES], out, client=client, prompts=str(data["session"]),
                       model=data["model"], stats=True, progress=False)
    assert [r["status"] for r in report] == ["done"] * 3, report
    for name in NAMES:
        same_files(out / f"{name}_labels.tif", ref / f"{name}_labels.tif")
        same_files(out / f"{name}_stats.csv", ref / f"{name}_stats.csv")
    assert all(r["frames"] == 6 and r["seconds"] > 0 and r["attempts"] == 1 for r in report)
    assert len({r["worker"] for r in report}) == 2  # both worker processes took stacks
    assert {r["model_loads"] for r in report} == {1}  # each loaded the model once and kept it
    assert json.loads((out / "batch-report.json").read_text()) == report
    assert partials(out) == []


def test_broken_stack_then_rerun_skips_done_and_retries_failed(data, client, tmp_path):
    d = data["dir"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a01", "a02"):
        (inputs / f"{name}.tif").write_bytes((d / f"{name}.tif").read_bytes())
    (inputs / "b01.tif").write_bytes(b"II*\0 truncated")
    (inputs / "list.csv").write_text("input,prompts\na01.tif\na02.tif\nb01.tif\n")
    out = tmp_path / "out"
    run = subprocess.run([*napari_sam2_cmd(), "batch", "--list", str(inputs / "list.csv"),
                          "--out-dir", str(out), "--prompts", str(data["session"]), "--model", data["model"],
                          "--workers", "2", "--stats", "--no-progress"],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "2 done, 0 skipped, 1 failed of 3" in run.stderr
    report = by_input(json.loads((out / "batch-report.json").read_text()))
    assert [report[n]["status"] for n in NAMES] == ["done", "done", "failed"]
    assert "b01.tif" in report["b01"]["error"] and "\n" not in report["b01"]["error"]
    assert not (out / "b01_labels.tif").exists() and not (out / "b01_stats.csv").exists()
    for name in ("a01", "a02"):
        same_files(out / f"{name}_labels.tif", data["ref"] / f"{name}_labels.tif")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
              for p in out.iterdir() if p.suffix in (".tif", ".csv")}

    # the broken stack is replaced by a good one; the rerun does only that one
    (inputs / "b01.tif").write_bytes((d / "b01.tif").read_bytes())
    report = run_batch([], out, list_file=str(inputs / "list.csv"), client=client,
                       prompts=str(data["session"]), model=data["model"], stats=True, progress=False)
    assert [r["status"] for r in report] == ["skipped", "skipped", "done"]
    assert [r["frames"] for r in report] == [6, 6, 6]
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
             for p in out.iterdir() if p.suffix in (".tif", ".csv")}
    assert {k: after[k] for k in before} == before  # finished outputs are not rewritten
    same_files(out / "b01_labels.tif", data["ref"] / "b01_labels.tif")

    # other settings into the same folder: the finished outputs are kept, the stacks fail
    report = run_batch([str(inputs / "a01.tif")], out, client=client, prompts=str(data["session"]),
                       model=data["model"], stats=True, contrast=(0, 255), progress=False)
    assert report[0]["status"] == "failed" and "other settings" in report[0]["error"]
    assert (out / "a01_labels.tif").stat().st_mtime_ns == before["a01_labels.tif"][1]


def test_seeds_dir_matches_serial_segment_and_changed_seeds_rerun(data, client, tmp_path):
    d, seeds, ref, out = data["dir"], tmp_path / "seeds", tmp_path / "ref", tmp_path / "out"
    seeds.mkdir()
    ref.mkdir()
    write_seeds(seeds / "a01.tif", {7: (20, 20, 8), 300: (40, 44, 10)})
    write_seeds(seeds / "a02_labels.tif", {5: (40, 40, 9)})

    def serial(name, seed_file):
        assert main(["segment", str(d / f"{name}.tif"), "--seeds", str(seed_file), "--seed-frame", "1",
                     "--out", str(ref / f"{name}_labels.tif"), "--stats", str(ref / f"{name}_stats.csv"),
                     "--model", data["model"]]) == 0

    def batch():
        return by_input(run_batch([str(d / f"{n}.tif") for n in NAMES], out, client=client,
                                  seeds_dir=str(seeds), seed_frame=1, model=data["model"], stats=True,
                                  progress=False))

    serial("a01", seeds / "a01.tif")
    serial("a02", seeds / "a02_labels.tif")
    report = batch()
    assert [report[n]["status"] for n in NAMES] == ["done", "done", "failed"], report
    assert report["b01"]["error"].startswith(f"no seed file for '{d / 'b01.tif'}'")
    assert report["b01"]["attempts"] == 0
    for name in ("a01", "a02"):
        same_files(out / f"{name}_labels.tif", ref / f"{name}_labels.tif")
        same_files(out / f"{name}_stats.csv", ref / f"{name}_stats.csv")
    assert set(np.unique(tifffile.imread(out / "a01_labels.tif")[1]).tolist()) == {0, 7, 300}

    # new seeds for a02 under the same name: not skipped; its old output is kept, never overwritten
    write_seeds(seeds / "a02_labels.tif", {9: (20, 44, 7)})
    report = batch()
    assert [report[n]["status"] for n in NAMES] == ["skipped", "failed", "failed"]
    assert "other settings" in report["a02"]["error"]
    (out / "a02_labels.tif").unlink()  # the user moves the old result away: the stack reruns
    (out / "a02_stats.csv").unlink()
    report = batch()
    assert [report[n]["status"] for n in NAMES] == ["skipped", "done", "failed"]
    serial("a02", seeds / "a02_labels.tif")
    same_files(out / "a02_labels.tif", ref / "a02_labels.tif")
    assert partials(out) == []


def test_auto_seed_matches_serial_segment(data, client, tmp_path):
    d, out = data["dir"], tmp_path / "out"
    loose = dict(auto_seed_points=4, auto_seed_min_area=20, auto_seed_iou=0.0, auto_seed_stability=0.0)
    (entry,) = run_batch([str(d / "a01.tif")], out, client=client, auto_seed=2, model=data["model"],
                         progress=False, **loose)
    assert entry["status"] == "done", entry
    assert main(["segment", str(d / "a01.tif"), "--auto-seed", "2", "--out", str(tmp_path / "serial.tif"),
                 "--model", data["model"], *[f"--{k.replace('_', '-')}={v}" for k, v in loose.items()]]) == 0
    same_files(out / "a01_labels.tif", tmp_path / "serial.tif")
    assert tifffile.imread(out / "a01_labels.tif").max() > 0


def test_worker_killed_mid_stack_is_retried(data, client, tmp_path):
    out = tmp_path / "out"
    final = out / "long_labels.zarr"
    box = {}
    runner = threading.Thread(target=lambda: box.setdefault("report", run_batch(
        [str(data["dir"] / "long.tif")], out, client=client, prompts=str(data["session"]),
        model=data["model"], format="zarr", progress=False)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        for p in out.glob(".long_labels.zarr.partial-*"):
            # a few frames of the stack are written (the zarr is staged under a hidden name in it)
            if any(p.glob("*/0/[1-9]*")):
                victim = int(p.name.split("partial-")[1].split("-")[0])  # the worker's pid
        time.sleep(0.05)
    assert victim is not None, "the stack did not start in time"
    os.kill(victim, signal.SIGKILL)
    assert not final.exists() and not (out / ".napari-sam2-batch" / "long_labels.zarr.json").exists()
    runner.join(timeout=180)
    assert not runner.is_alive(), "the batch did not finish after the worker died"
    (entry,) = box["report"]
    assert entry["status"] == "done" and entry["attempts"] >= 2, entry
    import zarr

    got = zarr.open_group(str(final), mode="r")
    want = zarr.open_group(str(data["ref"] / "long_labels.zarr"), mode="r")
    np.testing.assert_array_equal(got["0"][:], want["0"][:])
    assert dict(got.attrs) == dict(want.attrs)
    assert partials(out) == []
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed worker


# --------------------------------------------------------------------------- external scheduler
def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_on_a_running_dask_scheduler(data, tmp_path):
    bindir = Path(sys.executable).parent
    dask = ([str(bindir / "dask")] if (bindir / "dask").exists()
            else [sys.executable, "-m", "distributed.cli.dask_spec"])
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--no-dashboard", "--scheduler-file", str(sched_file)], env=ENV,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen([*dask, "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "4GB"],
                                      env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "out"
        cmd = [*napari_sam2_cmd(), "batch", str(data["dir"] / "long.tif"), str(data["dir"] / "a01.tif"),
               str(data["dir"] / "a02.tif"), "--out-dir", str(out), "--prompts", str(data["session"]),
               "--model", data["model"], "--scheduler", address, "--stats"]
        # SIGTERM (a job's time limit) while the long stack runs: exit 143, nothing looks done
        first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(first)
        deadline = time.monotonic() + 180
        while not list(out.glob(".long_labels.tif.partial-*")) and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 143, err
        assert "interrupted" in err and "Traceback" not in err
        report = by_input(json.loads((out / "batch-report.json").read_text()))
        assert report["long"]["status"] == "failed" and "interrupted" in report["long"]["error"]

        # the same command finishes the batch (the interrupted stack may have been finished by its
        # worker meanwhile: with a scheduler of its own, a running stack is not killed)
        run = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert f"at {address}" in run.stderr and "stacks" in run.stderr  # the progress bar
        report = json.loads((out / "batch-report.json").read_text())
        assert {r["status"] for r in report} <= {"done", "skipped"} and len(report) == 3
        for name in ("long", "a01", "a02"):
            same_files(out / f"{name}_labels.tif", data["ref"] / f"{name}_labels.tif")
        for name in ("a01", "a02"):
            same_files(out / f"{name}_stats.csv", data["ref"] / f"{name}_stats.csv")
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_a_closing_cluster_does_not_report_its_own_shutdown(client):
    """Heartbeats that meet a closing scheduler log tracebacks; the batch quiets its workers first.

    (Last in this module: the shared cluster's workers stay quiet afterwards.)
    """
    import logging

    from napari_sam2.batch.cluster import quiet_shutdown

    def level():
        return logging.getLogger("distributed").getEffectiveLevel()

    assert set(client.run(level).values()) != {logging.CRITICAL}
    quiet_shutdown(client)
    levels = client.run(level)
    assert len(levels) == 2 and set(levels.values()) == {logging.CRITICAL}
