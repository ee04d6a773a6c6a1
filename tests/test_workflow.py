"""The Snakemake workflow and the submitit launcher (workflow/, slurm/, saccader/pipeline/launch.py).

Dry-runs only, plus two tiny launcher jobs: nothing here trains. Every Snakemake call writes into a temporary
results_dir, never into the repository's results/.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saccader.pipeline.config import run_config as run_config_path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, target=None, check=True) -> str:
    """Run Snakemake in the repository; the target goes first (--config and --configfile take several values)."""
    args = ([target] if target else []) + list(args)
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{out[-4000:]}")
    return out


def job_counts(out: str) -> dict[str, int]:
    """The 'Job stats' table of a dry-run as {rule: count}."""
    table = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def experiment(config_file: str) -> dict:
    from saccader.pipeline.config import load_experiment

    return load_experiment(ROOT / config_file)


def expected_counts(config: dict) -> dict[str, int]:
    """What `all` must run: every run and seed, every evaluation and attack job, every analysis target."""
    from saccader import catalog
    from saccader.pipeline import attack as attacks
    from saccader.pipeline import evaluate

    seeds = len(config["seeds"])
    counts = {"check_data": 1, "param_counts": 1, "all": 1, "train": len(config["train"]) * seeds,
              "attack": len(catalog.ATTACKS) * seeds, "evaluate_glimpses": len(catalog.EVALUATIONS["glimpses"]) * seeds,
              "evaluate": sum(len(m) for k, m in catalog.EVALUATIONS.items() if k != "glimpses") * seeds}
    counts.update({name: 1 for name in catalog.TARGETS})
    counts["export_model"] = sum(1 for run in config["train"] if catalog.own_evaluations(run)) * seeds
    return counts


@pytest.fixture(scope="module")
def fake_imagenet(tmp_path_factory) -> Path:
    """ImageNet's layout with 1,000 class folders and one tiny JPEG per class and split."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet")
    image = Image.new("RGB", (8, 8), (120, 60, 30))
    for c in range(1000):
        for split in ("train", "val"):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            image.save(folder / f"n{c:08d}_{split}.JPEG")
    return root


def run_config(out: str, results: Path) -> str:
    """The one content-addressed config copy that the jobs of a dry run read (``--config``), named by the resolved
    config's content; the dry run does not write it."""
    (path,) = set(re.findall(rf"--config ({re.escape(str(results))}/configs/\w+\.yaml)", out))
    assert not Path(path).exists()
    return path


def resolved(config_file: str, results: Path, root) -> dict:
    """The experiment as Snakemake resolves it with ``--config results_dir=RESULTS dataset={root: ROOT}``."""
    config = experiment(config_file)
    config["results_dir"], config["dataset"]["root"] = str(results), str(root)
    return config


def test_lint_is_clean():
    out = snakemake("--lint", "--configfile", "config/embedded.yaml")
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


def test_paper_scale_dry_run_lists_every_job(fake_imagenet, tmp_path):
    config = experiment("config.yaml")
    out = snakemake("-n", "-p", "--config", f"results_dir={tmp_path}", f"dataset={{root: {fake_imagenet}}}", target="all")
    counts = job_counts(out)
    assert counts == expected_counts(config)
    assert counts["train"] == 14 * 5 and counts["attack"] == 4 * 5  # every model x 5 seeds; PGD/SPSA per model
    for run in config["train"]:  # every run of every seed, with its initialisation edges
        for seed in config["seeds"]:
            assert f"--run {run} --seed {seed} --out {tmp_path}/runs/{run}/seed{seed}" in out
    assert f"--init saccader_pretrain={tmp_path}/runs/saccader_pretrain/seed3" in out
    assert "--cluster local" in out and "--cluster slurm" not in out  # without the slurm profile: local jobs
    for kind in ("glimpses", "full_image", "occlusion", "nasnet"):
        assert f"--kind {kind}" in out
    path = run_config(out, tmp_path)
    assert out.count(f"--config {path}") == sum(counts.values()) - sum(
        counts[k] for k in ("all", "param_counts", "export_model"))
    assert counts["export_model"] == 10 * 5  # a bundle of every run an evaluation reports on (not pre-training)
    assert not any(tmp_path.iterdir())  # a dry run writes nothing (the jobs' config is written in onstart)
    # the copy's name is the hash of its content: the paper config with the command line's two values
    assert path == run_config_path(resolved("config.yaml", tmp_path, fake_imagenet))[0]


def test_embedded_config_replaces_paper_config_and_the_report_has_every_figure(tmp_path):
    """--configfile config/embedded.yaml is merged over config.yaml into the experiment the CLI loads, and
    `snakemake --report` puts every figure and table with its caption into one self-contained page."""
    from PIL import Image

    args = ["--configfile", "config/embedded.yaml", "--config", f"results_dir={tmp_path}",
            f"dataset={{root: {tmp_path}/dataset}}"]
    out = snakemake("-n", "-p", *args, target="all")
    counts = job_counts(out)
    assert counts.pop("make_dataset") == 1
    assert counts == expected_counts(experiment("config/embedded.yaml"))
    assert run_config(out, tmp_path) == run_config_path(resolved("config/embedded.yaml", tmp_path,
                                                                 f"{tmp_path}/dataset"))[0]
    # long chains first: a training job's priority is the length of the chain of runs that start from it
    priorities = dict(re.findall(r"wildcards: run=(\w+), seed=0\n(?:    .*\n)*?    priority: (\d+)", out))
    assert priorities == {"bagnet77_lowd": "3", "saccader_pretrain": "2", "dram_pretrain_wide": "2",
                          "saccader": "1", "dram_pretrain_narrow": "1", "nasnet": "1", "nasnet_331": "1"}

    for path in (Path(p) for line in out.splitlines() if line.startswith("    output: ") for p in line[12:].split(", ")):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":
            Image.new("RGB", (4, 4)).save(path)
        else:
            path.write_text("<p>result</p>" if path.suffix == ".html" else "")
    report = snakemake(*args, "--report", str(tmp_path / "report.html"))
    from saccader import catalog

    for name, target in catalog.TARGETS.items():
        shown = [Path(o).name for o in target.outputs if o.endswith((".png", ".html"))]
        if name not in ("index", "results_md"):  # results.md is the docs' page, not a report item
            assert f"Adding {shown[0]} " in report, f"{name} is missing from the report"
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"<(script|link|img)[^>]*(src|href)=\"https?://", page)  # no remote assets


def test_one_figure_builds_only_what_it_needs(tmp_path):
    out = snakemake("-n", "-p", "--configfile", "config/smoke.yaml", "--config", f"results_dir={tmp_path}",
                    f"dataset={{root: {tmp_path}/dataset}}", target="fig6")
    assert set(job_counts(out)) == {"make_dataset", "check_data", "train", "evaluate", "fig6"}
    # Saccader-NASNet needs the Saccader chain and NASNet with its 77/113 fine-tuning, nothing else
    runs = set(re.findall(r"--run (\w+) --seed 0", out))
    assert {"bagnet77_lowd", "saccader_pretrain", "saccader", "nasnet_77", "nasnet_113"} <= runs
    assert not runs & {"resnet_v2_50", "dram", "bagnet77", "saccader_no_attention"}


def test_changed_plotting_code_reruns_only_the_plot(tmp_path):
    args = ["--configfile", "config/smoke.yaml", "--config", f"results_dir={tmp_path}",
            f"dataset={{root: {tmp_path}/dataset}}"]
    plan = snakemake("-n", *args, target="fig3")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # a dry run writes nothing
    outputs = [p for line in plan.splitlines() if line.startswith("    output: ") for p in line[12:].split(", ")]
    assert f"{tmp_path}/figures/fig3.png" in outputs and len(outputs) > 40
    old = 946684800  # 2000-01-01: every result of fig3's DAG exists, the figure is newer than its data ...
    for path in map(Path, outputs):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path, (old, old + (1 if path.parent.name == "figures" else 0)))
    # ... but older than the plotting code (as right after an edit of analysis/): only the plotting job reruns.
    assert job_counts(snakemake("-n", *args, target="fig3")) == {"fig3": 1}
    for name in ("fig3.png", "fig3.pdf"):  # and once the figure is redrawn, nothing is left to do
        os.utime(tmp_path / "figures" / name)
    assert "Nothing to be done" in snakemake("-n", *args, target="fig3")
    assert not (tmp_path / "configs").exists()


def test_slurm_profile_passes_resources_to_the_launcher(tmp_path):
    out = snakemake("-n", "-p", "--profile", "slurm", "--config", f"results_dir={tmp_path}",
                    f"dataset={{root: {tmp_path}/imagenet}}", target=f"{tmp_path}/runs/bagnet77_lowd/seed0/model.pt")
    profile = yaml.safe_load((ROOT / "slurm/config.yaml").read_text())["set-resources"]["train"]
    launch = next(line for line in out.splitlines() if "saccader.pipeline.launch" in line and " train " in line)
    assert f"--cluster slurm --partition={profile['slurm_partition']}" in launch
    assert f"--gpus {profile['gpu']} --cpus {profile['cpus_per_task']} --mem-mb {profile['mem_mb']}" in launch
    assert f"--time-min {profile['runtime']}" in launch


def test_the_train_command_adds_its_arguments_to_the_launcher_command(tmp_path):
    """One function (common.smk ``launch``) builds every heavy rule's command; train adds its batch cut to it."""
    out = snakemake("-n", "-p", "--config", f"results_dir={tmp_path}", "--set-resources", "train:nodes=2",
                    "train:micro_batch=8", target=f"{tmp_path}/runs/bagnet77_lowd/seed0/model.pt")
    line = next(line for line in out.splitlines() if "saccader.pipeline.launch" in line and " train " in line)
    words = shlex.split(line.split("Shell command: ", 1)[-1])
    launcher, job = words[:words.index("--")], words[words.index("--") + 1:]
    assert launcher[:3] == ["python", "-m", "saccader.pipeline.launch"]
    assert launcher[launcher.index("--nodes") + 1] == "2" and launcher.index("--nodes") + 2 == launcher.index("--gpus")
    assert job[:7] == ["train", "--run", "bagnet77_lowd", "--seed", "0", "--out",
                       f"{tmp_path}/runs/bagnet77_lowd/seed0"]
    assert job[job.index("--micro-batch"):][:3] == ["--micro-batch", "8", "--config"]
    assert job[-3:] == [">", f"{tmp_path}/logs/train/bagnet77_lowd/seed0.log", "2>&1"]


def test_default_profile_leaves_the_slurm_profile_alone():
    """Snakemake applies workflow/profiles/default also under --profile slurm, and its keys win: none may overlap."""
    default = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    slurm = yaml.safe_load((ROOT / "slurm/config.yaml").read_text())
    assert not set(default) & set(slurm)
    assert "executor" not in slurm  # heavy jobs reach SLURM through saccader.pipeline.launch (submitit), not a plugin


def launch(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saccader.pipeline.launch", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_launcher_turns_a_job_failure_into_exit_1_with_the_stderr_tail(tmp_path):
    proc = launch("--folder", str(tmp_path / "sub"), "--cluster", "local", "--",
                  "check-data", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "launch: job log" in proc.stderr and "failed" in proc.stderr
    assert f"error: config file {tmp_path / 'missing.yaml'} does not exist" in proc.stderr  # from the job's stderr


def test_launcher_runs_a_subcommand_as_a_local_submitit_job(tiny_dataset, tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_dataset))
    stamp = tmp_path / "data.ok"
    proc = launch("--folder", str(tmp_path / "sub"), "--", "check-data", "--config", str(tmp_path / "c.yaml"),
                  "--workers", "1", "--stamp", str(stamp), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stamp.is_file()
    job = re.search(r"launch: local job (\d+): saccader check-data", proc.stderr)
    assert job and f"launch: job {job[1]} done" in proc.stderr
    assert (tmp_path / "sub" / f"{job[1]}_0_log.err").is_file()  # the job's own log, where the launcher said


def test_launcher_maps_resources_to_sbatch_and_requeues_the_same_command(tmp_path, monkeypatch):
    from saccader.pipeline import launch as launcher

    # submitit's SLURM executor insists on finding srun; the sbatch script is only written here, never submitted.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"executor": {"signal_delay_s": 77, "max_requeues": 5}}))
    command = ["train", "--config", str(tmp_path / "c.yaml"), "--run", "saccader"]
    args = launcher.parse_args(["--folder", str(tmp_path), "--cluster", "slurm", "--partition", "gpu", "--account",
                                "lab", "--gpus", "8", "--cpus", "6", "--mem-mb", "64000", "--time-min", "90",
                                "--", *command])
    executor = launcher.build_executor(args)
    sbatch = executor._executor._make_submission_file_text("CMD", "UID")
    for flag in ("--partition=gpu", "--account=lab", "--gpus-per-node=8", "--ntasks-per-node=8",
                 "--cpus-per-task=6", "--mem=64000MB", "--time=90", "--signal=USR2@77", "--job-name=train"):
        assert f"#SBATCH {flag}\n" in sbatch
    assert executor._executor.max_num_timeout == 5  # executor.max_requeues of the experiment config
    local = launcher.build_executor(launcher.parse_args(["--folder", str(tmp_path), "--no-warm-start", "--",
                                                         *command]))._executor
    assert local.parameters["signal_delay_s"] == 77 and local.max_num_timeout == 5  # local jobs honour them too
    job = launcher.SaccaderJob(args.command, threads=args.cpus)
    again = job.checkpoint().function  # what submitit requeues on preemption or time-out
    assert again.argv == command and again.threads == 6


def test_launcher_rejects_bad_resources(tmp_path):
    proc = launch("--folder", str(tmp_path), "--cpus", "0", "--", "params", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --cpus = 0 is out of range")
