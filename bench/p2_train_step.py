"""P2: throughput of a training step of the training session (``saccader.pipeline.train.Session``, what
``train()`` loops over) vs a bare PyTorch loop of the same model.

    python bench/p2_train_step.py [--runs bagnet77_lowd saccader] [--steps 12] [--repeats 2] [--out FILE.json]

Both loops see the same in-memory tensors (the data path is measured apart, in ``bench/data_path.py``): ours is the
session of the embedded recipe on an in-memory dataset of random images, two epochs of ``--steps`` steps through its
loader and ``Session.steps``; its second epoch is compared with a bare loop (``zero_grad / loss / backward / SGD
step`` over pre-batched tensors, in the recipe's memory format and bf16 autocast, as the session runs them). Bare and
ours alternate (bare, ours, bare, ..., bare) and the medians are compared, in wall time and in CPU time (the latter
is robust to the other jobs of a shared machine). The bare loop's loss is a plain cross-entropy for ``classify``
runs and ``saccader.pipeline.train.step_loss`` (the same objective, eq 6) for the others. Target: ours / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401
import torch
import torch.nn.functional as F

from common import InMemory, embedded_config, random_images, report, setup_threads


def _init_dirs(config: dict, run: str, tmp: Path) -> dict[str, str]:
    """Fresh weights for each run the recipe starts from (the loop's speed does not depend on their values)."""
    from saccader.models import from_config
    from saccader.pipeline import io
    from saccader.pipeline.config import recipe

    init = {}
    for name in recipe(config, run).get("init_from", []):
        folder = tmp / "init" / name
        io.torch_save(from_config(recipe(config, name)["model"], config).state_dict(), folder / "model.pt")
        init[name] = str(folder)
    return init


def ours(config: dict, run: str, steps: int, tmp: Path) -> tuple[float, float]:
    """(wall, CPU) images/s of the second epoch of the run's training session on in-memory data."""
    from saccader.pipeline.train import Session

    config = copy.deepcopy(config)
    rec = config["train"][run]
    rec.update(epochs=2, warmup_epochs=1, eval_batch_size=rec["batch_size"])
    data = InMemory(random_images(config, steps * rec["batch_size"]), random_images(config, rec["batch_size"], 1))
    session = Session(config, run, 0, datasets=data, init=_init_dirs(config, run, tmp), device="cpu")
    for epoch in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        for loss, _ in session.steps(epoch):
            pass
        loss.item()  # the loop's end-of-epoch read
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = session.steps_per_epoch * rec["batch_size"]
    return images / wall, images / cpu


def bare(config: dict, run: str, steps: int) -> tuple[float, float]:
    """(wall, CPU) images/s of a bare loop: pre-batched tensors, zero_grad, loss, backward, SGD (Nesterov) step."""
    from saccader.models import from_config
    from saccader.pipeline.config import recipe
    from saccader.pipeline.train import (MOMENTUM, autocast_factory, param_groups, step_loss, to_device, use_bf16,
                                         use_channels_last)

    rec, device = recipe(config, run), torch.device("cpu")
    torch.manual_seed(0)
    model = from_config(rec["model"], config)
    channels_last = use_channels_last(rec, device)  # the recipe's format and autocast, as the session uses them
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = autocast_factory(use_bf16(rec, device), device)
    optimizer = torch.optim.SGD(param_groups(model, rec), lr=rec["lr"], momentum=MOMENTUM, nesterov=True)
    data = random_images(config, steps * rec["batch_size"])
    images_, labels_ = data.tensors
    batches = [(to_device(x, device, channels_last), y)
               for x, y in zip(images_.split(rec["batch_size"]), labels_.split(rec["batch_size"]))]
    generator = torch.Generator().manual_seed(1)
    model.train()
    for i, (images, labels) in enumerate(batches[:2] + batches):  # two warm-up steps
        if i == 2:
            wall, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            if rec["stage"] == "classify":
                loss = F.cross_entropy(model(images).mean(dim=(2, 3)), labels)  # autocast runs it in fp32
            else:
                loss = step_loss(model, rec, images, labels, generator)[0]
        loss.backward()
        optimizer.step()
    images = len(batches) * rec["batch_size"]
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def measure(run: str, steps: int = 12, repeats: int = 2, config: dict | None = None) -> dict:
    """Bare, ours, bare, ours, ..., bare in one process; ratios of the medians."""
    config = config or embedded_config()
    bares, ours_ = [bare(config, run, steps)], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            ours_.append(ours(config, run, steps, Path(tmp)))
            bares.append(bare(config, run, steps))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    rec = config["train"][run]
    return {"run": run, "stage": rec["stage"], "batch": rec["batch_size"], "steps": steps,
            "ours_img_s": med(ours_, 0), "bare_img_s": med(bares, 0), "ours/bare": med(ours_, 0) / med(bares, 0),
            "ours/bare_cpu": med(ours_, 1) / med(bares, 1),
            "bare_spread": (max(b[0] for b in bares) - min(b[0] for b in bares)) / med(bares, 0)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["bagnet77_lowd", "saccader"], help="runs of config/embedded.yaml")
    p.add_argument("--steps", type=int, default=12, help="steps per epoch (and bare-loop steps)")
    p.add_argument("--repeats", type=int, default=2, help="runs of train() (bare loops: one more)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    report("P2 training step", [measure(run, args.steps, args.repeats) for run in args.runs], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
