"""``saccader plan``: the micro-batch, time-limit and data checks, the targets' jobs, the CPU measurement and the
comparison with a run's benchmark files (the counting on fake tensors: tests/test_plan_counting.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saccader.pipeline.plan import fit, jobs, measure, report
from saccader.pipeline.config import load

ROOT = Path(__file__).resolve().parents[1]


def _job(**kw) -> jobs.Job:
    base = dict(rule="train", name="train/x", runs=[], outputs=["runs/x/seed{seed}/model.pt"], resolution=224,
                precision="bf16", flops=3e18, images=1e6, fwd_flops_per_image=1e9, step_flops_per_image=3e9,
                act_bytes_per_image=200 * 2 ** 20, static_bytes=2 * 2 ** 30, params=10 ** 7, batch=1024)
    return jobs.Job(**{**base, **kw})


CONFIG = {"dataset": {"name": "imagenet", "num_workers": 8}, "executor": {"max_requeues": 1}, "train": {"x": {}}}


def test_micro_batch_fits_the_gpu_and_divides_the_per_gpu_batch():
    job = _job()
    profile = {"train": {"gpu": 4, "cpus_per_task": 8, "runtime": 60 * 48, "mem_mb": 10 ** 6}}
    fit.plan_job(job, CONFIG, profile, fit.Settings(gpu="A100-40GB"), {})
    usable = (40 * 0.9 - 1) * 2 ** 30 - job.static_bytes
    assert job.micro_fit == int(usable // (200 * 2 ** 20))
    assert 256 % job.micro_batch == 0 and job.micro_batch <= job.micro_fit
    assert job.accumulation == 256 // job.micro_batch
    assert any("does not fit" in p and "micro_batch: 128" in p for p in job.problems)


def test_time_limit_counts_requeues_and_names_the_fix():
    profile = {"train": {"gpu": 1, "cpus_per_task": 64, "runtime": 60, "mem_mb": 10 ** 6}}
    job = _job(flops=1e19, images=1)
    fit.plan_job(job, CONFIG, profile, fit.Settings(mfu=0.5), {})
    hours = 1e19 / (0.5 * 989.5e12) / 3600  # 5.6 h against 1 h x (1 + 1 requeue)
    assert job.hours == pytest.approx(hours)
    assert any("max_requeues >= 5" in p for p in job.problems)


def test_attacks_resume_across_requeues_evaluations_must_fit_one_allocation():
    for rule, ok in (("attack", True), ("evaluate", False)):  # 1.5 h against 1 h x (1 + 1 requeue)
        job = _job()
        job.hours = 1.5
        fit._check_time(job, CONFIG, rule, 60)
        assert (job.problems == []) == ok, (rule, job.problems)
    job = _job()
    job.hours = 5.5
    fit._check_time(job, CONFIG, "attack", 60)
    assert job.problems and "max_requeues >= 5" in job.problems[0] and "subset_size" in job.problems[0]


def test_measured_images_per_s_replace_the_mfu_model():
    profile = {"train": {"gpu": 1, "cpus_per_task": 64, "runtime": 10 ** 6, "mem_mb": 10 ** 6}}
    job = _job(flops=3e9 * 1e6, images=1e6)
    measured = {("x", "bf16", 224): {"images_per_s": 1000.0, "micro_batch": 64, "device": "H100"}}
    fit.plan_job(job, CONFIG, profile, fit.Settings(), measured)
    assert job.hours == pytest.approx(1e6 / 1000 / 3600)
    assert "measured" in job.rate_source


def test_data_bound_job_is_flagged_with_the_workers_it_needs():
    profile = {"train": {"gpu": 1, "cpus_per_task": 2, "runtime": 10 ** 6, "mem_mb": 10 ** 6}}
    job = _job(step_flops_per_image=1e6)  # a cheap model eats images faster than 2 workers decode them
    fit.plan_job(job, CONFIG, profile, fit.Settings(transform_rates={(224, True): 100.0}), {})
    assert job.data_wait > 1 and any("waits on data" in p for p in job.problems)


def test_no_gpu_in_the_profile_is_a_problem():
    job = _job()
    fit.plan_job(job, CONFIG, {"train": {"gpu": 0}}, fit.Settings(), {})
    assert any("no GPU" in p for p in job.problems)


def test_compare_benchmarks_reads_snakemake_benchmark_files(tmp_path):
    folder = tmp_path / "train" / "x"
    folder.mkdir(parents=True)
    (folder / "seed0.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n20.0\t0:00:20\t1\t18.0\n")
    result = {"jobs": [{"rule": "train", "name": "train/x", "precision": "fp32", "hours": 30 / 3600}]}
    rows = report.compare_benchmarks(result, tmp_path)
    assert rows[0]["projected/wall"] == pytest.approx(1.5)


def test_targets_include_the_training_runs_upstream():
    jobs = [_job(name="train/a", outputs=["runs/a/seed{seed}/model.pt"]),
            _job(name="train/b", runs=["a"], outputs=["runs/b/seed{seed}/model.pt"]),
            _job(rule="attack", name="attack/b", runs=["b"], outputs=["attack/b/seed{seed}.parquet"])]
    targets = report.target_jobs(jobs)
    assert targets["table_supp6"] == {"attack/b", "train/b", "train/a"}
    assert targets["index"] >= targets["table_supp6"]


def test_transform_rate_times_the_appendix_c_transform_on_generated_jpegs():
    config = load(ROOT / "config.yaml")
    assert measure.transform_rate(config, 224, train=True, images=2, rounds=1) > 0


def test_gpu_train_json_and_jpeg_bench_files_are_read(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "gpu_train.json").write_text(
        '{"device": "H100", "torch": "2", "runs": [{"run": "x", "micro_batch": 64, "precision": "bf16", '
        '"images_per_s": 900.0, "resolution": 224}]}')
    (bench / "jpeg_transform.json").write_text(
        '{"rows": [{"resolution": 224, "transform": "train", "images_per_s_core": 150.0}]}')
    assert fit.load_measured(tmp_path)[("x", "bf16", 224)]["images_per_s"] == 900.0
    assert measure.load_transform_rates(tmp_path) == {(224, True): 150.0}


@pytest.mark.slow
def test_cli_writes_plan_md_and_json_and_the_index_links_them(tmp_path):
    from analysis.index import index
    from saccader.pipeline.cli import main

    assert main(["plan", "--config", str(ROOT / "config.yaml"), "--config", str(ROOT / "config" / "smoke.yaml"), "--results", str(tmp_path)]) == 0
    result = __import__("json").loads((tmp_path / "plan.json").read_text())
    assert {j["rule"] for j in result["jobs"]} == {"train", "evaluate", "evaluate_glimpses", "attack"}
    assert "GPU-hours" in (tmp_path / "plan.md").read_text()
    index(tmp_path, tmp_path)
    assert 'href="plan.md"' in (tmp_path / "index.html").read_text()


def test_micro_batched_sampling_stage_pays_the_baseline_pre_pass():
    profile = {"train": {"gpu": 4, "cpus_per_task": 64, "runtime": 10 ** 6, "mem_mb": 10 ** 6, "micro_batch": 32}}
    plain, sampled = _job(train_images=1e6), _job(train_images=1e6)
    fit.plan_job(plain, CONFIG, profile, fit.Settings(), {})
    fit.plan_job(sampled, {**CONFIG, "train": {"x": {"stage": "reinforce"}}}, profile, fit.Settings(), {})
    assert plain.accumulation == 8
    assert sampled.flops - plain.flops == pytest.approx(1e6 * 1e9)


def test_cpu_plan_of_a_training_job_adds_its_measured_parts():
    job = _job(precision="fp32", steps=10, dev_images=100, checkpoints=2)
    parts = {"setup_s": 0.5, "step_s": 0.2, "checkpoint_s": 0.05, "dev_s_per_image": 0.001, "flops_per_s": 1e9}
    settings = fit.Settings(cpu_rates={"fp32": 1e9, "bf16": 1e9}, cpu_runs={"x": parts}, cpu_start_s=1.0)
    fit.plan_job(job, CONFIG, {}, settings, {})
    assert job.hours * 3600 == pytest.approx(1.0 + 0.5 + 10 * 0.2 + 2 * 0.05 + 100 * 0.001)
    assert job.gpu == "cpu" and job.gpu_hours == 0.0


@pytest.mark.slow
def test_measure_cpu_run_times_each_part_of_a_training_job(tmp_path):
    config = load([ROOT / "config.yaml", ROOT / "config" / "embedded.yaml"])
    samples = measure._canvases(tmp_path, 64, config["dataset"]["high_res_size"])
    parts = measure.measure_cpu_run(config, "saccader_pretrain", samples, steps=1)  # cache_features: every part
    assert parts["batch"] == 64 and parts["precision"] in ("fp32", "bf16")
    for key in ("step_s", "dev_s_per_image", "checkpoint_s", "cache_s_per_image"):
        assert parts[key] > 0, key
