"""Measured, not modelled: the Appendix C transform's images/s on generated JPEGs, and ``--cpu``: each training job's
parts timed on this CPU with its own training session (``saccader.pipeline.train.Session``)."""

from __future__ import annotations

import logging
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from saccader.pipeline.config import resolution, train_recipe
from saccader.pipeline.plan.counting import count_train
from saccader.pipeline.plan.jobs import ROOT, dataset_sizes
from saccader.pipeline.plan.fit import Settings

log = logging.getLogger("saccader.pipeline.plan")

def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` ImageNet-sized JPEGs (quality 90, alternating 500 x 375 and 400 x 350, smooth content plus noise:
    ImageNet's typical sizes; noise keeps the decoder's work realistic)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = ((500, 375), (400, 350))[i % 2]
        yy, xx = np.mgrid[0:h, 0:w]
        phase = rng.uniform(0, 6.28, 3)
        base = np.stack([128 + 100 * np.sin(xx / (20 + 10 * k) + yy / 37 + phase[k]) for k in range(3)], -1)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"img{i:04d}.JPEG")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def transform_rate(config: dict, resolution: int, train: bool = True, images: int = 24, rounds: int = 2,
                   paths: list | None = None) -> float:
    """Images/s on one core of decode + the Appendix C transform (``FolderDataset``'s path: PIL decode, then
    ``build_transform``) at ``resolution`` on ImageNet-sized JPEGs (``paths``, else ``images`` generated ones); the
    best of ``rounds`` passes, in CPU seconds (what a worker with a core to itself does)."""
    import torch

    from saccader.pipeline.data.folder import load_rgb, build_transform

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loader worker runs one thread
    try:
        transform = build_transform(config, train=train, resolution=resolution)
        with tempfile.TemporaryDirectory() as tmp:
            paths = paths or write_jpegs(Path(tmp), images)
            generator = torch.Generator().manual_seed(0)
            best = 0.0
            for _ in range(rounds):
                tick = time.process_time()  # CPU seconds: a loader worker has its core (nice -n 19 while measuring)
                for p in paths:
                    transform(load_rgb(str(p)), generator)
                best = max(best, len(paths) / (time.process_time() - tick))
    finally:
        torch.set_num_threads(threads)
    return best


def load_transform_rates(results_dir: Path) -> dict:
    """{(resolution, train): images/s per core} of bench/jpeg_transform.py's results file, if there is one."""
    path = results_dir / "benchmarks" / "jpeg_transform.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(int(r["resolution"]), r["transform"] == "train"): float(r["images_per_s_core"]) for r in rows}


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def _canvases(folder: Path, n: int, side: int) -> list:
    """``n`` grey PNG canvases of ``side`` px with random clutter, as (path, label): what the digits dataset stores
    (saccader.pipeline.data.digits renders them at ``high_res_size``; the transforms resize them)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        pixels = (rng.random((side, side)) < 0.1).astype(np.uint8) * 255
        path = folder / f"c{i:04d}.png"
        Image.fromarray(pixels, mode="L").save(path)
        samples.append((str(path), i % 10))
    return samples


def measure_cpu_run(config: dict, run: str, samples: list, steps: int = 3) -> dict:
    """The parts of training job ``run`` on this CPU, measured now with the job's own training session
    (``saccader.pipeline.train.Session``: what ``train()`` sets up and steps) on the generated images ``samples``:

    - ``step_s``: one :meth:`Session.steps` iteration, loading its batch included (median of ``steps`` after a
      warm-up step);
    - ``dev_s_per_image``: :meth:`Session.evaluate`, per image; ``cache_s_per_image``: the one-off frozen
      representation pass of ``cache_features``, per image;
    - ``checkpoint_s``: the finiteness check and one ``checkpoint.save`` of the session's state;
    - ``setup_s``: building the session (model, optimizer, data sets, loaders; the cache pass included).

    All are CPU seconds of this (single-threaded) process: what the job takes with a core to itself, whatever else
    the machine runs while measuring; ``step_wall_s`` is the wall time of the same step, for the record."""
    import statistics

    import torch

    from saccader.pipeline import checkpoint
    from saccader.pipeline import train as T
    from saccader.pipeline.data.folder import FolderDataset, build_transform

    # random weights: the time of a step does not depend on the init_from runs' values
    config = {**config, "train": {**config["train"], run: {**config["train"][run], "init_from": []}}}
    rec = train_recipe(config, run)
    res = resolution(config, rec)
    sets = {(split, train, uint8): FolderDataset(samples, build_transform(config, train, res, uint8=uint8), cache=True)
            for split, train, uint8 in (("train", True, True), ("train", False, False), ("dev", False, True))}
    sets["train", False, False].get(0, None)  # decode the canvases before the clock starts
    tick = time.process_time()
    session = T.Session(config, run, 0, datasets=lambda split, train, uint8: sets[split, train, uint8], device="cpu")
    out = {"precision": "bf16" if T.use_bf16(rec, session.device) else "fp32", "batch": session.batch,
           "setup_s": time.process_time() - tick}
    if session.cache_cpu_s:
        out["cache_s_per_image"] = session.cache_cpu_s / len(samples)
    seconds, cpu = [], []  # per step; the first (it warms oneDNN up) is left out
    epoch = 0
    tick, cpu_tick = time.perf_counter(), time.process_time()
    while len(cpu) <= steps:  # epochs of ``samples``, as many as the steps need
        for loss, right in session.steps(epoch):
            loss.item(), right.sum().item()
            now, cpu_now = time.perf_counter(), time.process_time()
            seconds.append(now - tick)
            cpu.append(cpu_now - cpu_tick)
            tick, cpu_tick = now, cpu_now
            if len(cpu) > steps:
                break
        epoch += 1
    out["step_s"] = statistics.median(cpu[1:])
    out["step_wall_s"] = statistics.median(seconds[1:])  # above step_s where the CPU was shared while measuring
    tick = time.process_time()
    session.evaluate()
    out["dev_s_per_image"] = (time.process_time() - tick) / len(samples)
    with tempfile.TemporaryDirectory() as tmp:
        tick = time.process_time()
        session.weights_finite()
        checkpoint.save(Path(tmp) / "checkpoint.pt", **session.state())
        out["checkpoint_s"] = time.process_time() - tick
    return out


def _interpreter_seconds(code: str) -> float:
    """CPU seconds of a fresh interpreter running ``code`` (what every job pays to start its processes), or the
    number ``code`` prints."""
    import resource
    import subprocess
    import sys

    def children() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    tick = children()
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True, text=True)
    return float(done.stdout) if done.stdout.strip() else children() - tick


def _pack_seconds(sizes: dict, side: int) -> float:
    """Seconds to load decoded-image packs of the train and dev splits' sizes (``FolderDataset``'s cache file)."""
    import torch

    from saccader.pipeline import io

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for split in ("train", "dev"):
            paths.append(Path(tmp) / f".decoded-{split}.pt")
            io.torch_save({"digest": "", "images": torch.zeros(sizes[split], 3, side, side, dtype=torch.uint8)},
                          paths[-1])
        tick = time.process_time()
        for path in paths:
            io.torch_load(path)
        return time.process_time() - tick


def measure_cpu(config: dict, runs: list | None = None) -> Settings:
    """This CPU as the device of ``config``'s training jobs: every part of each run's job measured now
    (``measure_cpu_run``), and the start of a job: the launcher's interpreter (``saccader.pipeline.launch``), the job's
    (``saccader.pipeline.warmstart`` client), and the project's modules imported in the job (the warm-start server holds only
    third-party ones; without warm start, torch is imported as well) and its loading of the decoded-image packs, all in
    CPU seconds. Evaluation and attack jobs are projected from FLOPs at the median achieved rate of the training
    steps of their precision."""
    import statistics

    from saccader.pipeline.warmstart import PREIMPORTS

    runs = runs or sorted(config["train"])
    side = config["dataset"]["high_res_size"]  # the digits canvases' size on disk (saccader.pipeline.data.digits)
    dev_images = max(config["train"][r]["batch_size"] for r in runs)
    with tempfile.TemporaryDirectory() as tmp:
        samples = _canvases(Path(tmp), dev_images, side)
        # untimed: first-use imports and allocations, which every job pays in its start (measured below)
        measure_cpu_run(config, runs[0], samples, steps=1)
        measured = {}
        for run in runs:
            log.info("timing the parts of a %s job on this CPU", run)
            measured[run] = measure_cpu_run(config, run, samples)
    # the job runs `python -m saccader train ...`: its CLI, with what a warm-start fork holds already imported
    cli = ("import contextlib, runpy, sys, time; t = time.process_time(); sys.argv = ['saccader', 'train', '--help']\n"
           "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
           "    runpy.run_module('saccader', run_name='__main__')\n"
           "import torch\n"  # an optimizer's first construction imports torch._dynamo: every job pays it
           "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)\n"
           "print(time.process_time() - t)")
    preload = f"import {', '.join(PREIMPORTS)}\n" if config["executor"].get("warm_start") else ""
    start = (_interpreter_seconds("import saccader.pipeline.launch") + _interpreter_seconds("import saccader.pipeline.warmstart")
             + _interpreter_seconds(preload + cli))
    if config["dataset"].get("cache_images"):  # each job loads the decoded train and dev images (data.folder's pack)
        start += _pack_seconds(dataset_sizes(config), side)
    rates = {}
    counts = {}
    for run, m in measured.items():
        c = counts.setdefault(run, count_train(config, run, bf16=m["precision"] == "bf16"))
        m["flops_per_s"] = c["step_flops"] * m["batch"] / m["step_s"]
        rates.setdefault(m["precision"], []).append(m["flops_per_s"])
    rate = {p: statistics.median(v) for p, v in rates.items()}
    for p in ("fp32", "bf16"):
        rate.setdefault(p, rate.get("fp32") or rate.get("bf16"))
    return Settings(cpu_rates=rate, cpu_runs=measured, cpu_start_s=start)
