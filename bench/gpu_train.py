"""GPU training throughput: the real training loop and the synthetic step, and the paper-scale projection.

    python bench/gpu_train.py [--config config.yaml] [--runs bagnet77_lowd resnet_v2_50] [--batch 128] [--steps 10]
                              [--all-runs] [--compile] [--attacks] [--out FILE.json] [--json PATH]

For each training run (default: BagNet-77-lowD and ResNet-v2-50; ``--all-runs``: every run of the config):

- the real loop: the run's training session (``saccader.pipeline.train.Session``, what ``train()`` loops over: its
  data loader and workers, its steps, its dev evaluation) for ``--steps`` batches of ``--batch`` images, random
  weights (``init_from`` dropped), in the run's precision and memory format; images/s from the step after
  ``--warmup`` to the end of the loop, and the dev evaluation's images/s. It needs the config's dataset (ImageNet at
  paper scale).
- the synthetic step: ``Session.step`` of that run on one batch of random images of the run's resolution already on
  the device, in fp32 and in bf16 autocast with channels_last; no data, no waits.
  The loop's rate over the synthetic one is the share of the GPU the loop keeps busy.

Nothing here sets a backend flag: the real loop runs first and sets what training sets (``cudnn.benchmark``, in
``saccader.distributed.init``; TF32 convolutions are PyTorch's default), and the synthetic steps after it run under
the same settings. ``--json`` (default ``results/benchmarks/gpu_train.json``) gets the measured images/s per (run,
precision, resolution) for ``saccader plan``: the real loop's where measured, else the synthetic step's.

The projection of the paper-scale cost of ``all``: for each run, epochs x training images (ImageNet train minus the
dev split) x seeds / its measured bf16 images/s, in GPU-hours; runs not measured take the images/s of the measured
run with the same model, else of BagNet-77-lowD (marked ``assumed``). Evaluation and attacks are listed apart: attack
cost = subset x (PGD iterations x forward+backward + SPSA iterations x samples forwards, no early stop: an upper
bound).

Needs CUDA; without it the script says so and exits with status 2. ``--device cpu`` runs the same code on the CPU,
for the tests (tiny configs only): ``python bench/gpu_train.py --device cpu --config config/smoke.yaml --steps 2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import common  # noqa: F401
import torch

from common import ROOT, report

IMAGENET_TRAIN = 1_281_167  # ILSVRC-2012 train images; the dev split (dataset.dev_size) is held out of these
DEFAULT_RUNS = ("bagnet77_lowd", "resnet_v2_50")


def train_images(config: dict) -> int:
    ds = config["dataset"]
    total = IMAGENET_TRAIN if ds["name"] == "imagenet" else ds["digits"]["train_images"]
    return total - ds["dev_size"]


def _session(config: dict, run: str, device: torch.device, datasets=None, micro_batch: int = 0, **recipe):
    """The training session of ``run`` with random weights (``init_from`` dropped) and ``recipe`` values set."""
    from saccader.pipeline.train import Session

    config = copy.deepcopy(config)
    config["train"][run].update(init_from=[], **recipe)
    return Session(config, run, 0, datasets=datasets, device=str(device), micro_batch=micro_batch)


def synthetic_session(config: dict, run: str, batch: int, device: torch.device, amp: bool, channels_last: bool):
    """The session of ``run`` (random weights) in ``amp`` (bf16 autocast) and ``channels_last`` as asked, and one
    batch of random images and labels of its resolution on ``device``: ``session.step(images, labels, 0.0)`` is
    one training step with no data path."""
    from saccader.pipeline.config import resolution
    from saccader.pipeline.train import autocast_factory

    res = resolution(config, config["train"][run])
    data = common.InMemory(common.random_images(config, batch, resolution=res), common.random_images(config, 1))
    session = _session(config, run, device, data, batch_size=batch, bf16=amp, channels_last=channels_last)
    session.autocast = autocast_factory(amp, device)  # as asked, also where a CPU only emulates bf16 (bench/cpu_bf16)
    images, labels = (t.to(device) for t in next(iter(torch.utils.data.DataLoader(data.sets["train"], batch))))
    return session, images, labels


def train_rate(config: dict, run: str, batch: int, device: torch.device, amp: bool, channels_last: bool,
               compile_: bool = False, steps: int = 10, warmup: int = 3) -> float:
    """Images/s of ``steps`` steps (after ``warmup``) of :func:`synthetic_session`'s step."""
    session, images, labels = synthetic_session(config, run, batch, device, amp, channels_last)
    if compile_:
        session.model = torch.compile(session.model)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        session.step(images, labels, 0.0)
    sync()
    tick = time.perf_counter()
    for _ in range(steps):
        session.step(images, labels, 0.0)
    sync()
    return batch * steps / (time.perf_counter() - tick)


def loop_rate(config: dict, run: str, batch: int, device: torch.device, steps: int = 30, warmup: int = 5,
              micro_batch: int = 0) -> dict:
    """The training session of ``run`` on the config's data: ``steps`` batches of ``batch`` images through its
    loader and :meth:`Session.steps` (what ``train()`` loops over), then its dev evaluation.

    Returns images/s of the steps after the first ``warmup`` (to the end of the last, waited for), the dev
    evaluation's images/s, and the seconds before the first step (model, data set, workers).
    """
    warmup = max(1, min(warmup, steps - 1))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = time.perf_counter()
    session = _session(config, run, device, micro_batch=micro_batch, batch_size=batch, steps_per_epoch=steps,
                       eval_batch_size=config["train"][run].get("eval_batch_size", batch))
    ready, marks = time.perf_counter(), []
    for _ in session.steps(0):
        marks.append(time.perf_counter())  # the host's view: the step is queued
    sync()
    loop_end = time.perf_counter()
    if len(marks) < steps:
        raise RuntimeError(f"{run}: the loop ran {len(marks)} of {steps} steps (fewer training images than "
                           f"steps x batch?)")
    session.evaluate()
    sync()
    dev_images = len(session.dev_loader.dataset)
    return {"loop_img_s": batch * (steps - warmup) / (loop_end - marks[warmup - 1]),
            "dev_eval_img_s": dev_images / (time.perf_counter() - loop_end), "startup_s": ready - started}


def forward_rate(config: dict, model_name: str, batch: int, device: torch.device, steps: int = 10,
                 backward: bool = False) -> float:
    """Images/s of the attacked function (bf16, channels_last): a forward, or a forward + backward to the input."""
    from saccader.models import image_logits
    from saccader.models import from_config

    model = from_config(model_name, config).to(device).eval().requires_grad_(False)
    if hasattr(model, "glimpse_gradient"):
        model.glimpse_gradient = True  # DRAM, as the attack job sets it (saccader/pipeline/attack.py)
    model = model.to(memory_format=torch.channels_last)
    t = config["attack"]["num_glimpses"] if model_name in ("saccader", "dram") else None
    res = config["dataset"]["image_size"]
    images = torch.randn(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call():
        x = images.clone().requires_grad_(backward)
        with torch.autocast(device.type, dtype=torch.bfloat16), torch.set_grad_enabled(backward):
            out = image_logits(model, x, t).float().sum()
        if backward:
            out.backward()

    call()
    sync()
    tick = time.perf_counter()
    for _ in range(steps):
        call()
    sync()
    return batch * steps / (time.perf_counter() - tick)


def projection(config: dict, rates: dict[str, float]) -> list[dict]:
    """GPU-hours of every training run of ``all`` (all seeds) from the measured bf16 images/s."""
    n, seeds = train_images(config), len(config["seeds"])
    by_model = {config["train"][r]["model"]: v for r, v in rates.items()}
    rows = []
    for run, rec in config["train"].items():
        if run in rates:
            rate, source = rates[run], "measured"
        elif rec["model"] in by_model:
            rate, source = by_model[rec["model"]], "same model"
        else:
            rate, source = rates.get("bagnet77_lowd", next(iter(rates.values()))), "assumed"
        hours = rec["epochs"] * n * seeds / rate / 3600
        rows.append({"run": run, "epochs": rec["epochs"], "img_s": rate, "rate_from": source, "gpu_hours": hours})
    return rows


def attack_hours(config: dict, fwd: dict[str, float], fwd_bwd: dict[str, float]) -> list[dict]:
    at, seeds = config["attack"], len(config["seeds"])
    rows = []
    for model in fwd:
        pgd = at["subset_size"] * at["pgd_iters"] / fwd_bwd[model]
        spsa = at["subset_size"] * at["spsa_iters"] * at["spsa_samples"] / fwd[model]
        rows.append({"attack": model, "pgd_gpu_hours": seeds * pgd / 3600, "spsa_gpu_hours_max": seeds * spsa / 3600})
    return rows


def contract_runs(config: dict, rows: list[dict], batch: int, micro_batch: int, device: torch.device) -> list[dict]:
    """The ``runs`` of gpu_train.json: images/s per GPU by (run, precision, resolution), the real loop's where it
    was measured (in the recipe's precision), else the synthetic step's."""
    from saccader.pipeline.config import resolution
    from saccader.pipeline.train import use_bf16

    out = {}
    for row in rows:
        run = row.get("run")
        if run not in config["train"]:
            continue
        rec, res = config["train"][run], resolution(config, config["train"][run])
        entry = {"run": run, "micro_batch": batch, "resolution": res}
        if "fp32_img_s" in row:
            out[(run, "fp32")] = {**entry, "precision": "fp32", "images_per_s": row["fp32_img_s"],
                                  "source": "synthetic_step"}
        if "bf16_cl_img_s" in row:
            out[(run, "bf16")] = {**entry, "precision": "bf16", "images_per_s": row["bf16_cl_img_s"],
                                  "source": "synthetic_step"}
        if "loop_img_s" in row:
            precision = "bf16" if use_bf16(rec, device) else "fp32"
            out[(run, precision)] = {**entry, "micro_batch": micro_batch or batch, "precision": precision,
                                     "images_per_s": row["loop_img_s"], "source": "train_loop"}
    return list(out.values())


def write_json(path: str | Path, runs: list[dict], rows: list[dict], device: torch.device) -> None:
    from saccader.pipeline.io import write_text

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else common.machine()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"device": name, "torch": torch.__version__, "runs": runs, "rows": rows},
                                indent=1, default=float) + "\n")


def main(argv=None) -> int:
    from saccader.pipeline.config import load_experiment

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    p.add_argument("--all-runs", action="store_true", help="time every training run of the config")
    p.add_argument("--batch", type=int, default=128, help="images per GPU and step")
    p.add_argument("--micro-batch", type=int, default=0, help="the real loop's micro-batch (0: the whole --batch)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (the real loop: after --warmup more)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-loop", action="store_true", help="synthetic steps only (no data set on this machine)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the step's loss")
    p.add_argument("--attacks", action="store_true", help="also time the attacked models for the attack cost")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for the tests")
    p.add_argument("--out", default=None, help="all rows as JSON (bench/common.report)")
    p.add_argument("--json", default=str(ROOT / "results" / "benchmarks" / "gpu_train.json"),
                   help="measured images/s for `saccader plan` (default: results/benchmarks/gpu_train.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device on this machine; GPU throughput is not measured. Run this script on a GPU node "
              "(e.g. srun --gres=gpu:1 python bench/gpu_train.py); fix: nothing to fix on a CPU-only machine")
        return 2
    config = load_experiment(args.config)  # config.yaml, or config.yaml + an overlay (config/smoke.yaml)
    runs = list(config["train"]) if args.all_runs else args.runs
    rows, rates = [], {}
    for run in runs:
        row = {"run": run, "model": config["train"][run]["model"], "batch": args.batch}
        try:  # one run out of memory (NASNet at 331) must not lose the others' figures
            if not args.no_loop:  # first: it sets the backends as training does for the synthetic steps too
                loop = loop_rate(config, run, args.batch, device, args.warmup + args.steps, args.warmup,
                                 args.micro_batch)
                row.update(loop)
            row["fp32_img_s"] = train_rate(config, run, args.batch, device, amp=False, channels_last=False,
                                           steps=args.steps, warmup=args.warmup)
            row["bf16_cl_img_s"] = rates[run] = train_rate(config, run, args.batch, device, amp=True,
                                                           channels_last=True, steps=args.steps, warmup=args.warmup)
            row["bf16_cl/fp32"] = row["bf16_cl_img_s"] / row["fp32_img_s"]
            if "loop_img_s" in row:
                from saccader.pipeline.train import use_bf16

                synthetic = row["bf16_cl_img_s"] if use_bf16(config["train"][run], device) else row["fp32_img_s"]
                row["loop/synthetic"] = row["loop_img_s"] / synthetic
        except torch.cuda.OutOfMemoryError:
            row["error"] = f"out of memory at batch {args.batch}; rerun with --runs {run} --batch {args.batch // 2}"
        if args.compile and run in rates:
            try:
                row["compiled_img_s"] = train_rate(config, run, args.batch, device, amp=True, channels_last=True,
                                                   compile_=True, steps=args.steps, warmup=args.warmup)
                row["compiled/bf16_cl"] = row["compiled_img_s"] / row["bf16_cl_img_s"]
            except Exception as exc:  # torch.compile failures are many and varied; the eager figures stand
                row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(row, flush=True)
    if not rates:
        print("error: no run could be timed (see the rows above)")
        return 1
    measured = contract_runs(config, rows, args.batch, args.micro_batch, device)
    plan = projection(config, rates)
    rows += plan
    rows.append({"total_train_gpu_hours": sum(r["gpu_hours"] for r in plan), "config": args.config})
    if args.attacks:
        from saccader.catalog import ATTACKS

        fwd = {m: forward_rate(config, m, args.batch, device, args.steps) for m in ATTACKS}
        fwd_bwd = {m: forward_rate(config, m, args.batch, device, args.steps, backward=True) for m in ATTACKS}
        rows += attack_hours(config, fwd, fwd_bwd)
    report("GPU training throughput and paper-scale projection", rows, args.out)
    write_json(args.json, measured, rows, device)
    print(f"wrote {args.json} ({len(measured)} measured rates for saccader plan)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
