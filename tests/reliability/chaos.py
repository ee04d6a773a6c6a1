"""Chaos run of the whole workflow: signals at random moments to random processes of one Snakemake run, and the same
command rerun after each failure until it completes (tests/reliability/test_chaos.py compares the outcome with an
undisturbed run). Replay a failure with the seed it printed:

    .venv/bin/python tests/reliability/chaos.py --seed 1234 --config config/smoke.yaml --root /tmp/chaos

Targets (``KINDS``): Snakemake itself, the warm-start server (saccader/pipeline/warmstart.py), the process that computes
a heavy job (a child of that server, or the job's own interpreter without it: check_data, train, evaluate,
evaluate_glimpses, attack) and the light jobs (make_dataset, param_counts, export, a figure/table job of analysis/). Each
event is a SIGKILL or a SIGTERM (a hung job has its own test: tests/reliability/test_workflow_faults.py).
Only processes of this run are ever signalled: they name this run's folder, or are children of its own warm-start
server (a private TMPDIR gives it a private socket).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("check_data", "train", "evaluate", "evaluate_glimpses", "attack")
LIGHT = ("make_dataset", "param_counts", "export", "analysis")
KINDS = ("snakemake", "warmstart", *HEAVY, *LIGHT)


@dataclass
class Event:
    at_s: float  # seconds since the chaos run started
    kind: str
    signal: str
    pid: int
    what: str  # the job (its submitit folder or command) or process
    attempt: int  # which invocation of the command was running


@dataclass
class Outcome:
    seed: int
    events: list[Event] = field(default_factory=list)
    attempts: int = 0  # invocations of the command, the last one completed
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)  # the Snakemake output of every invocation
    tmpdir: str = ""  # TMPDIR of the run (its warm-start server's socket folder)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _job_folder(pid: int) -> str:
    """The submitit folder of a job process: from its stderr (the job's .err file) or its command line."""
    texts = _cmdline(pid)
    try:
        texts.append(os.readlink(f"/proc/{pid}/fd/2"))
    except OSError:
        pass
    for text in texts:
        found = re.search(r"/logs/submitit/(.+?)/(?:[^/]*_log\.(?:err|out)|$)", text)
        if found:
            return found.group(1)
    return ""


def targets(results: Path, snakemake_pid: int | None, tmpdir: Path) -> dict[str, list[tuple[int, str]]]:
    """Live processes of this run by kind: {kind: [(pid, what), ...]}."""
    found: dict[str, list[tuple[int, str]]] = {k: [] for k in KINDS}
    if snakemake_pid is not None and _state(snakemake_pid) not in ("Z", "?"):
        found["snakemake"].append((snakemake_pid, "snakemake"))
    procs = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    servers = set()
    for pid in procs:
        cmd = _cmdline(pid)
        line = " ".join(cmd)
        if "saccader.pipeline.warmstart" in line and "--serve" in cmd and str(tmpdir) in line:
            servers.add(pid)
            found["warmstart"].append((pid, "warm-start server"))
    for pid in procs:
        if _state(pid) in ("Z", "?"):
            continue
        cmd = _cmdline(pid)
        line = " ".join(cmd)
        job = None
        if _ppid(pid) in servers:  # a forked job
            job = _job_folder(pid)
        elif "submitit.core._submit" in line and str(results) in line and "saccader.pipeline.warmstart" not in line:
            job = _job_folder(pid)  # a job in its own interpreter (no warm start)
        if job:
            rule = job.split("/")[0]
            if rule == "evaluate" and job.split("/")[1] == "glimpses":
                rule = "evaluate_glimpses"
            if rule in found:
                found[rule].append((pid, job))
            continue
        if str(results) not in line or not cmd or "python" not in Path(cmd[0]).name:
            continue
        if cmd[1:3] == ["-m", "analysis"]:
            found["analysis"].append((pid, f"analysis {cmd[3]}"))
        elif cmd[1:4] == ["-m", "saccader", "make-dataset"]:
            found["make_dataset"].append((pid, "make-dataset"))
        elif cmd[1:4] == ["-m", "saccader", "params"]:
            found["param_counts"].append((pid, "params"))
        elif cmd[1:4] == ["-m", "saccader", "export"]:
            found["export"].append((pid, f"export {cmd[4]}"))
    return found


def run_command(config: Path, target: str = "all", cores: int = 2):
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"), target,
            "--configfile", str(config), "--cores", str(cores)]


def chaos(config: Path, seed: int, kills: int = 20, terms: int = 4, *, total: int | None = None,
          required: tuple[str, ...] = (), target: str = "all", gap_s: tuple[float, float] = (2.0, 9.0),
          max_attempts: int = 80, log=print) -> Outcome:
    """Run ``snakemake TARGET --configfile CONFIG`` to completion under ``kills`` SIGKILLs and ``terms`` SIGTERMs;
    every invocation is the same command. ``total``: the number of result files of an undisturbed run, to spread
    the events over the run's progress (else over time only; once the run is ahead of that schedule, events follow
    each other within 1.5 s). A kind of ``required`` that no scheduled event hit gets an extra SIGKILL when it is next
    seen. A kind not hit yet is struck within 1.5 s of its appearance, a required one at once. The first invocation
    that exits 0 ends the run: events still scheduled then are not fired (schedule a few spare ones)."""
    rng = random.Random(seed)
    cfg = yaml.safe_load(config.read_text())
    results = Path(cfg["results_dir"]).resolve()
    # a private warm-start server (its socket is under TMPDIR), on a short path (a unix socket's is <= 107 bytes)
    tmpdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    argv = run_command(config, target)
    signals = ["KILL"] * kills + ["TERM"] * terms
    rng.shuffle(signals)
    milestones = sorted(rng.uniform(0.0, 0.95) * total for _ in signals) if total else []
    log(f"chaos: seed {seed}; {len(signals)} events: {' '.join(signals)}; progress milestones (result files): "
        f"{[round(m) for m in milestones]}; command: {' '.join(argv)}")
    out = Outcome(seed=seed, tmpdir=str(tmpdir))
    hit: dict[str, int] = {}
    started = time.monotonic()
    fire_at = started + rng.uniform(*gap_s)
    while True:
        out.attempts += 1
        if out.attempts > max_attempts:
            raise RuntimeError(f"chaos: no completed run after {max_attempts} invocations")
        logfile = results.parent / f"chaos-attempt{out.attempts}.log"
        with open(logfile, "w") as fh:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        while proc.poll() is None:
            time.sleep(0.05)
            missing = [k for k in required if k not in hit]
            if not signals and not missing:
                continue
            now = time.monotonic()
            live = {k: v for k, v in targets(results, proc.pid, tmpdir).items() if v}
            if not signals:
                live = {k: v for k, v in live.items() if k in missing}
            unhit = [k for k in live if k not in hit]
            if any(k in missing for k in unhit):  # a required kind may live a second and never come back (check_data)
                fire_at = now
            elif unhit and fire_at - now > 1.5:  # a kind not hit yet is there: strike within its (maybe short) life
                fire_at = now + rng.uniform(0.0, 1.5)
            if now < fire_at or not live:
                continue
            if not unhit and milestones and _progress(results) < milestones[0]:  # spread over the run's progress
                continue
            if set(live) == {"snakemake"} and "snakemake" in hit:  # it parses or waits: strike its jobs instead
                fire_at = now + rng.uniform(0.5, 2.0)
                continue
            urgent = [k for k in unhit if k in missing]  # its jobs before a Snakemake that would take them along
            kinds = sorted([k for k in urgent if k != "snakemake"] or urgent or unhit or live)
            kind = rng.choices(kinds, weights=[1.0 / (1 + hit.get(k, 0)) for k in kinds])[0]  # the least hit first
            pid, what = rng.choice(sorted(live[kind]))
            sig = signals[0] if signals else "KILL"
            try:
                os.kill(pid, getattr(signal, f"SIG{sig}"))
            except ProcessLookupError:
                continue
            if signals:
                signals.pop(0)
                milestones = milestones[1:]
            hit[kind] = hit.get(kind, 0) + 1
            event = Event(round(now - started, 2), kind, sig, pid, what, out.attempts)
            out.events.append(event)
            log(f"chaos: {json.dumps(asdict(event))}")
            behind = bool(milestones) and _progress(results) >= milestones[0]  # the run outpaces the schedule
            fire_at = now + (rng.uniform(0.5, 1.5) if behind else rng.uniform(*gap_s))
        out.outputs.append(logfile.read_text(errors="replace"))
        log(f"chaos: invocation {out.attempts} exited with {proc.returncode} after "
            f"{time.monotonic() - started:.1f} s")
        if proc.returncode == 0:  # complete: a rerun would have nothing to do, so events left over stay unfired
            if signals:
                log(f"chaos: the run completed before {len(signals)} events: {' '.join(signals)}")
            break
    out.seconds = time.monotonic() - started
    _wait_for_leftovers(results, tmpdir)
    return out


def _progress(results: Path) -> int:
    """How far the run got: the results written so far (logs and benchmarks aside)."""
    return sum(1 for p in results.rglob("*") if p.is_file() and p.relative_to(results).parts[0] not in
               ("logs", "benchmarks"))


def _wait_for_leftovers(results: Path, tmpdir: Path, timeout_s: float = 120.0) -> None:
    """Jobs that outlive the Snakemake that started them would keep writing into the results: wait for them (the
    test then reports them), then stop this run's warm-start server."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = {k: v for k, v in targets(results, None, tmpdir).items() if v and k != "warmstart"}
        if not live:
            break
        time.sleep(0.2)
    for pid, _ in targets(results, None, tmpdir)["warmstart"]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def orphans(results: Path, tmpdir: Path) -> dict[str, list[tuple[int, str]]]:
    return {k: v for k, v in targets(results, None, tmpdir).items() if v and k != "warmstart"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--config", default="config/smoke.yaml")
    parser.add_argument("--root", required=True, help="scratch folder: results and dataset go there")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--terms", type=int, default=4)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    root = Path(args.root).resolve()
    config = yaml.safe_load(Path(args.config).read_text())
    config["results_dir"] = str(root / "results")
    config["dataset"]["root"] = str(root / "dataset")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = chaos(path, seed, args.kills, args.terms)
    print(json.dumps({"seed": seed, "attempts": out.attempts, "seconds": round(out.seconds, 1),
                      "events": [asdict(e) for e in out.events]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
