"""Shared helpers of the benchmark scripts: interleaved timing, the machine line, the embedded config.

Absolute times on the shared 2-core machines are noise (other jobs come and go), so every script reports ratios of
variants timed in the same process, interleaved round by round: a slow second slows every variant of that round
alike, and the median over rounds drops the rounds a neighbour disturbed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would flood the figures
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from the repository root
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    """One line naming the machine the figures come from."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads; python {platform.python_version()}")


def interleaved(variants: dict, rounds: int, warmup: int = 1, sync=None) -> dict[str, float]:
    """Median seconds per call of each zero-argument callable, timed in ``rounds`` interleaved rounds."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            if sync:
                sync()
            tick = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - tick)
    return {name: statistics.median(t) for name, t in times.items()}


def embedded_config(path: str | Path = "config/embedded.yaml") -> dict:
    from saccader.pipeline.config import load_experiment

    return load_experiment(ROOT / path)


def setup_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (default 1: the cores are shared, and ratios are what we report)."""
    import torch

    torch.set_num_threads(threads or 1)


def report(name: str, rows: list[dict], out: str | None) -> None:
    """Print the rows as an aligned table and, with ``out``, write them with the machine line as JSON."""
    print(f"# {name} -- {machine()}")
    for row in rows:
        print("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
    if out:
        from saccader.pipeline.io import write_text

        write_text(out, json.dumps({"benchmark": name, "machine": machine(), "rows": rows}, indent=1) + "\n")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def random_images(config: dict, n: int, seed: int = 0, resolution: int | None = None):
    """``n`` random (image, label) pairs held as tensors at ``resolution`` (default ``image_size``): the data of a
    benchmark that times the training session apart from its data path (``bench/data_path.py`` times that)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    size, classes = resolution or config["dataset"]["image_size"], config["dataset"]["num_classes"]
    return torch.utils.data.TensorDataset(torch.randn(n, 3, size, size, generator=g),
                                          torch.randint(0, classes, (n,), generator=g))


class InMemory:
    """A session's ``datasets``: the same in-memory train and dev sets for every request, their items drawn with
    ``get(index, generator)`` as ``FolderDataset``'s (nothing random here)."""

    def __init__(self, train, dev):
        self.sets = {"train": _Items(train), "dev": _Items(dev)}

    def __call__(self, split: str, train: bool, uint8: bool):
        return self.sets[split]


class _Items:
    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]

    def get(self, index, generator=None):
        return self.data[index]
