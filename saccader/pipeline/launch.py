"""Run one ``saccader`` subcommand as a submitit job and wait for it: the launcher of every heavy Snakemake rule.

    python -m saccader.pipeline.launch --folder results/logs/submitit/train/saccader/seed0 --cluster slurm \\
        --partition gpu --nodes 2 --gpus 8 --cpus 8 --mem-mb 480000 --time-min 2880 \\
        -- train --config results/config.yaml --run saccader --seed 0 --out results/runs/saccader/seed0 --micro-batch 16

Where a job runs and what it may use come from Snakemake's resources (set per rule in the profiles, never hard-coded
here): ``--cluster local`` runs it in a subprocess on this machine (the embedded default), ``slurm`` submits it with
sbatch, ``debug`` runs it in this process. A job has ``--nodes`` nodes of ``--gpus`` GPUs, one task per GPU;
``saccader.pipeline.distributed`` joins every task of every node into one process group. The job is checkpointable in
the submitit sense (as ``run_with_submitit.py`` of DINO): when SLURM preempts it or its time limit is near, submitit
requeues a fresh copy of the same command, and the command resumes from its ``checkpoint.pt``; a plain ``scontrol
requeue`` restarts the same pickled command the same way. The launcher waits for the final outcome, so Snakemake
sees one job that either succeeded or failed; on failure it prints the tail of the job's stderr and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from functools import partial
from pathlib import Path

import submitit
import yaml

from saccader.errors import UserError
from saccader.pipeline.snakelock import owner_gone

CLUSTERS = ("local", "slurm", "debug")


class SaccaderJob(submitit.helpers.Checkpointable):
    """The job: ``saccader <argv>`` in the job's process. Holds only its arguments, so a requeued copy is fresh.

    ``checkpoint()`` (inherited from submitit) resubmits this object, i.e. the same command; resuming is the
    subcommand's business (``saccader train`` restarts from ``<out>/checkpoint.pt``), as in DINO's ``Trainer``.
    """

    def __init__(self, argv: list[str], threads: int = 1):
        self.argv = list(argv)
        self.threads = threads

    def __call__(self) -> int:
        # Set before torch is imported in this process: one job must not use every core of a shared node.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(self.threads))
        from saccader.pipeline import cli

        try:
            status = cli.main(self.argv)
        except SystemExit as exc:  # argparse errors exit; make them a job failure, not a silent worker exit
            if _raised_by_submitit(exc):  # its requeue after a time-out or preemption signal: submitit's exit
                raise
            status = exc.code if isinstance(exc.code, int) else 2
        if status:
            raise RuntimeError(f"saccader {' '.join(self.argv)} exited with status {status}")
        return status


def _raised_by_submitit(exc: BaseException) -> bool:
    """Whether ``exc`` was raised in submitit's code (its signal handler exits after requeuing the job)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(submitit.__file__).parent in Path(tb.tb_frame.f_code.co_filename).parents


def build_executor(args) -> submitit.AutoExecutor:
    """An AutoExecutor whose parameters are exactly the flags given (the rule's Snakemake resources)."""
    extra = {}
    if args.cluster == "local" and args.warm_start:  # fork the job from a server that has torch imported
        extra["local_python"] = f"{shlex.quote(sys.executable)} -m saccader.pipeline.warmstart --threads {args.cpus}"
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster,
                                     slurm_max_num_timeout=args.max_requeues, local_max_num_timeout=args.max_requeues,
                                     **extra)
    params = dict(name=args.name or args.command[0], timeout_min=args.time_min, cpus_per_task=args.cpus,
                  # one task per GPU, as DINO's launcher: saccader.pipeline.distributed joins them into one process
                  # group
                  gpus_per_node=args.gpus, tasks_per_node=max(1, args.gpus), nodes=args.nodes,
                  mem_gb=args.mem_mb / 1024,
                  slurm_signal_delay_s=args.signal_delay_s)
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.account:
        params["slurm_account"] = args.account
    executor.update_parameters(**params)
    if args.cluster == "local":  # AutoExecutor takes no signal delay for local jobs; the LocalExecutor itself does
        executor._executor.update_parameters(signal_delay_s=args.signal_delay_s)
    return executor


def tail(path: Path | None, lines: int) -> str:
    if path is None or not Path(path).is_file():
        return "(no stderr file)"
    return "".join(Path(path).read_text(errors="replace").splitlines(keepends=True)[-lines:])


def run(args) -> int:
    executor = build_executor(args)
    started = time.monotonic()
    job = executor.submit(SaccaderJob(args.command, threads=args.cpus))
    log = partial(print, file=sys.stderr, flush=True)  # into the rule's log file
    log(f"launch: {args.cluster} job {job.job_id}: saccader {' '.join(args.command)}")
    if args.cluster != "debug":  # a debug job runs in this process, at job.result(), and has no files of its own
        log(f"launch: job log {job.paths.stdout}")
        log(f"launch: job err {job.paths.stderr}")
    try:
        if args.cluster == "local":  # submitit polls once a second; 160 short embedded jobs would idle ~40 s of wall
            while not job.done():
                time.sleep(0.05)
                if owner_gone():  # a SIGKILLed Snakemake: its rerun starts this job again
                    job.cancel()  # the job's controller kills its process (SIGINT, then SIGKILL)
                    log(f"launch: the Snakemake that started job {job.job_id} is gone: job cancelled")
                    return 1
        job.result()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError, RuntimeError) as exc:
        stderr = None if args.cluster == "debug" else job.paths.stderr
        log(f"launch: job {job.job_id} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        if time.monotonic() - started >= 60 * args.time_min:  # a hung job says nothing itself: say why it ended
            log(f"launch: job {job.job_id} ran past its time limit of {args.time_min} min (--time-min, the rule's "
                f"runtime resource) and was killed")
        if stderr is not None:
            log(f"launch: last {args.tail} lines of {stderr}:\n{tail(stderr, args.tail)}")
        return 1
    log(f"launch: job {job.job_id} done in {time.monotonic() - started:.1f} s{_usage(args.cluster)}")
    return 0


def _usage(cluster: str) -> str:
    """CPU time and peak RSS of a local job's processes (this launcher's waited-for descendants), for the log."""
    if cluster != "local":
        return ""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # ru_maxrss: KiB, of the largest descendant
    return f"; cpu {ru.ru_utime + ru.ru_stime:.1f} s, peak rss {ru.ru_maxrss / 1024:.0f} MiB"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m saccader.pipeline.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="submitit folder for the job's script, pickles and logs")
    parser.add_argument("--cluster", choices=CLUSTERS, default="local",
                        help="local: a subprocess here; slurm: sbatch; debug: this process, pdb on failure "
                             "(interactive debugging only)")
    parser.add_argument("--name", default="", help="job name (default: the subcommand)")
    parser.add_argument("--partition", default="", help="SLURM partition (Snakemake resource slurm_partition)")
    parser.add_argument("--account", default="", help="SLURM account (Snakemake resource slurm_account)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the job (resource nodes)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs per node, one task each (resource gpu)")
    parser.add_argument("--cpus", type=int, default=1, help="CPU cores per task (resource cpus_per_task)")
    parser.add_argument("--mem-mb", type=int, default=4000, help="memory per node in MB (resource mem_mb)")
    parser.add_argument("--time-min", type=int, default=60, help="time limit in minutes (resource runtime)")
    parser.add_argument("--signal-delay-s", type=int, default=None,
                        help="seconds between the preemption/time-out signal and the kill (time to checkpoint); "
                             "default: executor.signal_delay_s of the command's --config")
    parser.add_argument("--max-requeues", type=int, default=None,
                        help="requeues after time-outs before failing; default: executor.max_requeues of --config")
    parser.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                        help="local jobs: fork from a server with torch imported (saccader.pipeline.warmstart) instead "
                             "of a fresh interpreter; default: executor.warm_start of --config")
    parser.add_argument("--tail", type=int, default=40, help="stderr lines shown when the job fails")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the saccader subcommand and its flags")
    return parser


def _executor_settings(command: list[str]) -> dict:
    """The ``executor:`` section of the configs the command names (every ``--config``, merged in order), over the
    schema's defaults. A config that is missing or unreadable gives the defaults: the job itself then reports that
    problem, in its own log."""
    from saccader.pipeline.config import load_schema

    schema = load_schema()["properties"]["executor"]["properties"]
    settings = {key: spec["default"] for key, spec in schema.items()}
    for path in (Path(command[i + 1]) for i, arg in enumerate(command[:-1]) if arg == "--config"):
        if path.is_file():
            with contextlib.suppress(yaml.YAMLError, AttributeError):
                settings.update((yaml.safe_load(path.read_text()) or {}).get("executor") or {})
    return settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags, then the executor settings the flags leave open from the ``executor:`` section of the command's
    ``--config`` (read here, not passed by the rules, so that changing them never makes Snakemake rerun a job)."""
    args = build_parser().parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    unset = [key for key in ("signal_delay_s", "max_requeues", "warm_start") if getattr(args, key) is None]
    if unset:
        executor = _executor_settings(args.command)
        for key in unset:
            setattr(args, key, executor[key])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.command:
            raise UserError("no saccader subcommand given", "append -- train|evaluate|attack ... to the launcher")
        for flag in ("nodes", "gpus", "cpus", "mem_mb", "time_min", "max_requeues"):
            if getattr(args, flag) < (0 if flag in ("gpus", "max_requeues") else 1):
                raise UserError(f"--{flag.replace('_', '-')} = {getattr(args, flag)} is out of range",
                                "set the rule's Snakemake resource to a positive number in the profile")
        if args.nodes > 1 and args.cluster != "slurm":
            raise UserError(f"--nodes = {args.nodes} needs --cluster slurm (a {args.cluster} job runs on this machine)",
                            "set the rule's nodes resource to 1, or submitit_cluster to slurm, in the profile")
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
