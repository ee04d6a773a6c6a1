"""GPU training throughput (bf16 autocast + channels_last, optional torch.compile) and the paper-scale projection.

    python bench/gpu_train.py [--config config.yaml] [--runs bagnet77_lowd resnet_v2_50] [--batch 128] [--compile]
                              [--all-runs] [--out FILE.json]

For each training run (default: BagNet-77-lowD and ResNet-v2-50; ``--all-runs``: every run of the config) one
training step of that run's objective (``saccader.train.step_loss``: same model, stage, resolution as ``train()``)
is timed on random images of the run's resolution (224 or 331 at paper scale), in fp32 and in bf16 autocast with
channels_last (the set-up ``train()`` uses on CUDA); images/s per GPU after warm-up. The projection of the
paper-scale cost of ``all``: for each run, epochs x training images (ImageNet train minus the dev split) x seeds /
its measured bf16 images/s, in GPU-hours; runs not measured take the images/s of the measured run with the same
model, else of BagNet-77-lowD (marked ``assumed``). Evaluation and attacks are listed apart: attack cost =
subset x (PGD iterations x forward+backward + SPSA iterations x samples forwards, no early stop: an upper bound).

Needs CUDA; without it the script says so and exits with status 2. ``--device cpu`` runs the same code on the CPU,
for the tests (tiny configs only).
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401
import torch

from common import ROOT, report

IMAGENET_TRAIN = 1_281_167  # ILSVRC-2012 train images; the dev split (dataset.dev_size) is held out of these
DEFAULT_RUNS = ("bagnet77_lowd", "resnet_v2_50")


def train_images(config: dict) -> int:
    ds = config["dataset"]
    total = IMAGENET_TRAIN if ds["name"] == "imagenet" else ds["digits"]["train_images"]
    return total - ds["dev_size"]


def _setup(config: dict, run: str, device: torch.device, channels_last: bool):
    from saccader.models import from_config
    from saccader.train import MOMENTUM, _resolution, _train_mode, param_groups, recipe

    rec = {**recipe(config, run), "base_size": config["dataset"]["image_size"]}
    model = from_config(rec["model"], config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, rec), lr=1e-4, momentum=MOMENTUM, nesterov=True)
    _train_mode(model)
    return rec, model, optimizer, _resolution(config, rec)


def train_rate(config: dict, run: str, batch: int, device: torch.device, amp: bool, channels_last: bool,
               compile_: bool = False, steps: int = 10, warmup: int = 3) -> float:
    """Images/s of ``steps`` training steps of ``run`` (after ``warmup`` steps)."""
    from saccader.train import _autocast, step_loss

    rec, model, optimizer, res = _setup(config, run, device, channels_last)
    images = torch.randn(batch, 3, res, res, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, config["dataset"]["num_classes"], (batch,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = _autocast(amp, device)
    loss_fn = lambda x, y: step_loss(model, rec, x, y, generator)[0]  # noqa: E731
    if compile_:
        loss_fn = torch.compile(loss_fn)

    def step():
        with autocast():
            loss = loss_fn(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return batch * steps / (time.perf_counter() - tick)


def forward_rate(config: dict, model_name: str, batch: int, device: torch.device, steps: int = 10,
                 backward: bool = False) -> float:
    """Images/s of the attacked function (bf16, channels_last): a forward, or a forward + backward to the input."""
    from saccader.evaluate import image_logits
    from saccader.models import from_config

    model = from_config(model_name, config).to(device).eval().requires_grad_(False)
    if hasattr(model, "glimpse_gradient"):
        model.glimpse_gradient = True  # DRAM, as the attack job sets it (baselines/attacks.py)
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


def main(argv=None) -> int:
    from saccader.config import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    p.add_argument("--all-runs", action="store_true", help="time every training run of the config")
    p.add_argument("--batch", type=int, default=128, help="images per GPU and step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the step's loss")
    p.add_argument("--attacks", action="store_true", help="also time the attacked models for the attack cost")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for the tests")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device on this machine; GPU throughput is not measured. Run this script on a GPU node "
              "(e.g. srun --gres=gpu:1 python bench/gpu_train.py); fix: nothing to fix on a CPU-only machine")
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = load(args.config)
    runs = list(config["train"]) if args.all_runs else args.runs
    rows, rates = [], {}
    for run in runs:
        row = {"run": run, "model": config["train"][run]["model"], "batch": args.batch}
        try:  # one run out of memory (NASNet at 331) must not lose the others' figures
            row["fp32_img_s"] = train_rate(config, run, args.batch, device, amp=False, channels_last=False,
                                           steps=args.steps)
            row["bf16_cl_img_s"] = rates[run] = train_rate(config, run, args.batch, device, amp=True,
                                                           channels_last=True, steps=args.steps)
            row["bf16_cl/fp32"] = row["bf16_cl_img_s"] / row["fp32_img_s"]
        except torch.cuda.OutOfMemoryError:
            row["error"] = f"out of memory at batch {args.batch}; rerun with --runs {run} --batch {args.batch // 2}"
        if args.compile and run in rates:
            try:
                row["compiled_img_s"] = train_rate(config, run, args.batch, device, amp=True, channels_last=True,
                                                   compile_=True, steps=args.steps)
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
    plan = projection(config, rates)
    rows += plan
    rows.append({"total_train_gpu_hours": sum(r["gpu_hours"] for r in plan), "config": args.config})
    if args.attacks:
        from baselines.attacks import MODELS

        fwd = {m: forward_rate(config, m, args.batch, device, args.steps) for m in MODELS}
        fwd_bwd = {m: forward_rate(config, m, args.batch, device, args.steps, backward=True) for m in MODELS}
        rows += attack_hours(config, fwd, fwd_bwd)
    report("GPU training throughput and paper-scale projection", rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
