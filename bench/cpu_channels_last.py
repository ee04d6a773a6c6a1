"""CPU training step in channels_last vs contiguous (NCHW) memory format, per embedded run.

    python bench/cpu_channels_last.py [--runs nasnet resnet_v2_50 ...] [--rounds 5] [--config C] [--out FILE.json]

Decides the recipes' ``channels_last`` key on CPU (``saccader.pipeline.train.use_channels_last``; on CUDA it is always
on). Each run's training step (``Session.step`` of ``gpu_train.synthetic_session``: the run's objective,
``saccader.pipeline.train.step_loss``, and its optimizer) is timed on one batch of random images at the run's
resolution, both formats interleaved round by round in one child process per run: a format the CPU kernels cannot run is reported as ``crashed`` instead of ending the benchmark (torch 2.14's
oneDNN backward of a strided 1x1 conv corrupted memory in channels_last, which the BagNet projection now avoids).
Figure: NCHW seconds / channels_last seconds (> 1: channels_last is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import common  # noqa: F401

from common import ROOT, embedded_config, interleaved, report, setup_threads

DEFAULT_RUNS = ["bagnet77_lowd", "saccader", "resnet_v2_50", "dram_pretrain_wide", "dram", "nasnet", "nasnet_331",
                "nasnet_77", "nasnet_113"]


def time_variants(run: str, rounds: int, batch: int, config_path: str,
                  variants: dict[str, tuple[bool, bool]]) -> dict[str, float]:
    """Median step seconds of ``run`` for each variant name -> (channels_last, bf16 autocast), in this process."""
    import torch

    from gpu_train import synthetic_session

    config = embedded_config(config_path)
    steps = {}
    for name, (channels_last, bf16) in variants.items():
        session, images, labels = synthetic_session(config, run, batch, torch.device("cpu"), bf16, channels_last)
        steps[name] = lambda session=session, images=images, labels=labels: session.step(images, labels, 0.0)
    return interleaved(steps, rounds)


def time_run(run: str, rounds: int, batch: int, config_path: str = "config/embedded.yaml") -> dict:
    """Median fp32 step seconds of ``run`` in both memory formats (in this process)."""
    t = time_variants(run, rounds, batch, config_path, {"nchw": (False, False), "channels_last": (True, False)})
    return {"run": run, "nchw_s": t["nchw"], "channels_last_s": t["channels_last"],
            "speedup": t["nchw"] / t["channels_last"]}


def main(argv=None, name: str = "cpu_channels_last", script: str = __file__, timer=time_run,
         description: str = __doc__.splitlines()[0], default_runs: list[str] = DEFAULT_RUNS) -> int:
    """Every run in its own child process (``script --child RUN``, which calls ``timer``); a crash is a row."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", nargs="+", default=default_runs)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--config", default="config/embedded.yaml", help="config whose recipes are timed")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run, result as JSON on stdout
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    if args.child:
        print(json.dumps(timer(args.child, args.rounds, args.batch, args.config)))
        return 0
    rows = []
    for run in args.runs:
        cmd = [sys.executable, script, "--child", run, "--rounds", str(args.rounds), "--batch", str(args.batch),
               "--threads", str(args.threads or 1), "--config", args.config]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:  # a negative code is the signal that killed the child (-11: segmentation fault)
            rows.append({"run": run, "crashed": f"exit {proc.returncode}"})
    report(name, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
