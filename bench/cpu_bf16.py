"""CPU training step in bf16 autocast vs fp32, per embedded run, each in the memory format its recipe trains in.

    python bench/cpu_bf16.py [--runs bagnet77 dram ...] [--rounds 5] [--config C] [--out FILE.json]

Decides the recipes' ``bf16`` key on CPU (``saccader.pipeline.train.use_bf16``: honoured only where the CPU has native
bf16, AMX tiles or AVX512-BF16; on CUDA bf16 is always on). Same method as ``cpu_channels_last.py``: each run's
objective timed on one batch of
random images, both variants interleaved round by round in one child process per run. Figure: fp32 seconds / bf16
seconds (> 1: bf16 is faster). On a CPU without either, bf16 is emulated and the figure says how much that costs.
"""

from __future__ import annotations

import sys

import common  # noqa: F401

from common import embedded_config
from cpu_channels_last import main as run_children
from cpu_channels_last import time_variants

DEFAULT_RUNS = ["bagnet77", "bagnet77_lowd", "saccader", "resnet_v2_50", "dram_pretrain_wide", "dram_pretrain_narrow",
                "dram", "nasnet", "nasnet_331", "nasnet_77"]


def time_run(run: str, rounds: int, batch: int, config_path: str = "config/embedded.yaml") -> dict:
    """Median step seconds of ``run`` in fp32 and in bf16 autocast (in this process)."""
    from saccader.pipeline.train import cpu_has_native_bf16

    channels_last = bool(embedded_config(config_path)["train"][run].get("channels_last", False))
    t = time_variants(run, rounds, batch, config_path, {"fp32": (channels_last, False), "bf16": (channels_last, True)})
    return {"run": run, "channels_last": channels_last, "native_bf16": cpu_has_native_bf16(),
            "fp32_s": t["fp32"], "bf16_s": t["bf16"], "speedup": t["fp32"] / t["bf16"]}


def main(argv=None) -> int:
    return run_children(argv, name="cpu_bf16", script=__file__, timer=time_run,
                        description=__doc__.splitlines()[0], default_runs=DEFAULT_RUNS)


if __name__ == "__main__":
    sys.exit(main())
