"""Activation memory of ``saccader plan`` against a measurement: torch's live memory in real CPU training steps.

    python bench/plan_memory.py [--runs bagnet77_lowd resnet_v2_50 ...] [--config config/embedded.yaml] [--out F.json]

For each run (its recipe's precision on this CPU, and its memory format), the model and optimizer take one training
step at batch ``small`` (allocating gradients, momentum and oneDNN's caches), then one at ``small`` and one at
``large``. During each, glibc's own count of the bytes in use (``mallinfo2``: heap plus mmapped blocks, what torch's
CPU tensors hold, like ``torch.cuda.max_memory_allocated`` on a GPU) is read after every op, forward and backward
(a dispatch mode); the step's peak above its start is its activation memory. The growth of that peak from ``small``
to ``large`` images is the measurement; the plan's estimate is its saved-for-backward bytes per image
(``saccader.pipeline.plan.counting.count_train`` on fake tensors) times ``large - small``. Peak RSS growth is reported beside it:
it also holds what malloc keeps after frees (fragmentation), so it reads higher. Needs glibc >= 2.33.
"""

from __future__ import annotations

import argparse
import ctypes

import common  # noqa: F401

from common import ROOT, report

RUNS = ("bagnet77_lowd", "resnet_v2_50", "saccader", "dram_pretrain_wide", "nasnet")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def _peak_mode():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Peak(TorchDispatchMode):
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.peak = max(self.peak, _in_use())
            return out

    return Peak()


def step_peaks(config: dict, run: str, batches, bf16: bool) -> list[tuple[int, int]]:
    """(peak bytes in use above the step's start, peak RSS) of one real training step per batch size."""
    import resource

    import torch

    from saccader.pipeline import train as T
    from saccader.pipeline.config import resolution, train_recipe
    from saccader.models import from_config

    rec = train_recipe(config, run)
    res = resolution(config, rec)
    torch.manual_seed(0)
    model = from_config(rec["model"], config)
    cl = T.use_channels_last(rec, torch.device("cpu"))
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(T.param_groups(model, rec), lr=1e-6, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in batches:
        x = torch.randn(b, 3, res, res)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, config["dataset"]["num_classes"], (b,))
        T.train_mode(model)
        start = _in_use()
        with _peak_mode() as mode:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _ = T.step_loss(model, rec, x, y, gen)
            opt.zero_grad(set_to_none=False)
            loss.float().backward()
            opt.step()
        del loss
        out.append((mode.peak - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
    return out


def measure(config_path: str, run: str, small: int = 8, large: int = 72) -> dict:
    import torch

    from saccader.pipeline.plan import counting
    from saccader.pipeline import train as T
    from saccader.pipeline.config import load_experiment, recipe

    torch.set_num_threads(1)
    config = load_experiment(ROOT / config_path)
    bf16 = T.use_bf16(recipe(config, run), torch.device("cpu"))
    (_, _), (p_small, rss_small), (p_large, rss_large) = step_peaks(config, run, (small, small, large), bf16)
    measured = p_large - p_small
    estimate = counting.count_train(config, run, bf16=bf16)["act_bytes"] * (large - small)
    return {"run": run, "precision": "bf16" if bf16 else "fp32", "images": large - small,
            "estimate_mib": estimate / 2 ** 20, "measured_mib": measured / 2 ** 20,
            "estimate/measured": estimate / measured if measured > 0 else float("nan"),
            "rss_growth_mib": (rss_large - rss_small) / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/embedded.yaml")
    parser.add_argument("--runs", nargs="+", default=list(RUNS))
    parser.add_argument("--small", type=int, default=8)
    parser.add_argument("--large", type=int, default=72)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [measure(args.config, run, args.small, args.large) for run in args.runs]
    report("plan_memory", rows, args.out)


if __name__ == "__main__":
    main()
