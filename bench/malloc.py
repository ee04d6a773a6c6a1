"""Training step with glibc's default malloc vs with freed memory kept
(``saccader.pipeline.runtime.keep_freed_memory``).

    python bench/malloc.py [--runs bagnet77_lowd saccader ...] [--rounds 3] [--steps 10] [--out FILE.json]

The setting is process-wide and must come before the first allocation, so each variant runs in its own child
process, the two alternating round by round. A step is what a CPU training job does per batch: the Appendix C
training transform of ``batch`` uint8 canvases (as the cached embedded loader gives them), then the run's objective
(``saccader.pipeline.train.step_loss``), backward and the optimiser step. Figures: default seconds / kept seconds (> 1:
the setting is faster) and the ratio of peak resident memory (kept / default).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import common  # noqa: F401

from common import ROOT, embedded_config, report, setup_threads

DEFAULT_RUNS = ["bagnet77_lowd", "saccader", "resnet_v2_50", "dram", "nasnet", "nasnet_331"]


def time_steps(run: str, steps: int, batch: int, config_path: str) -> dict:
    """Median seconds of ``steps`` training steps of ``run`` (after 2 warm-up steps), and peak RSS, in this process."""
    import torch

    from gpu_train import synthetic_session
    from saccader.pipeline.config import resolution
    from saccader.pipeline.data.folder import build_transform

    config = embedded_config(config_path)
    res = resolution(config, config["train"][run])
    session, _, _ = synthetic_session(config, run, batch, torch.device("cpu"), amp=False, channels_last=False)
    transform = build_transform(config, train=True, resolution=res)
    canvas = config["dataset"]["digits"]["canvas"]
    raw = torch.randint(0, 256, (batch, 3, canvas, canvas), dtype=torch.uint8)
    labels = torch.randint(0, config["dataset"]["num_classes"], (batch,))

    def step():
        session.step(torch.stack([transform(img) for img in raw]), labels, 0.0)

    times = []
    for i in range(steps + 2):
        tick = time.perf_counter()
        step()
        if i >= 2:
            times.append(time.perf_counter() - tick)
    return {"s": statistics.median(times), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--config", default="config/embedded.yaml", help="config whose recipes are timed")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one run and variant, JSON on stdout
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.child:  # the setting first, before this process allocates anything large
        if args.keep:
            from saccader.pipeline.runtime import keep_freed_memory

            if not keep_freed_memory():
                print(json.dumps({"error": "mallopt unavailable (not glibc)"}))
                return 0
        setup_threads(args.threads)
        print(json.dumps(time_steps(args.child, args.steps, args.batch, args.config)))
        return 0
    setup_threads(args.threads)  # for the machine line; the children set their own
    rows = []
    for run in args.runs:
        got = {False: [], True: []}
        for _ in range(args.rounds):
            for keep in (False, True):
                cmd = [sys.executable, __file__, "--child", run, "--steps", str(args.steps), "--batch",
                       str(args.batch), "--threads", str(args.threads or 1), "--config", args.config]
                if keep:
                    cmd.append("--keep")
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
                got[keep].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if any("error" in r for r in got[True]):
            rows.append({"run": run, "skipped": got[True][0]["error"]})
            continue
        default_s = statistics.median(r["s"] for r in got[False])
        kept_s = statistics.median(r["s"] for r in got[True])
        rows.append({"run": run, "default_s": default_s, "kept_s": kept_s, "speedup": default_s / kept_s,
                     "peak_rss_ratio": statistics.median(r["rss_mb"] for r in got[True])
                     / statistics.median(r["rss_mb"] for r in got[False])})
    report("malloc", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
