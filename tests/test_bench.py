"""Sanity of the benchmark scripts (bench/): they run at tiny sizes and report what they claim. No timing asserts."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import common  # noqa: E402
import cpu_bf16  # noqa: E402
import cpu_channels_last  # noqa: E402
import data_path  # noqa: E402
import gpu_train  # noqa: E402
import malloc  # noqa: E402
import p1_saccader_inference as p1  # noqa: E402
import p2_train_step as p2  # noqa: E402
import p3_attacks as p3  # noqa: E402
import p5_rules  # noqa: E402
import warmstart  # noqa: E402

from saccader.pipeline.config import load, load_experiment  # noqa: E402
from saccader.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def smoke():
    return load_experiment(REPO / "config" / "smoke.yaml")


def test_p1_times_every_variant_and_ratios_agree():
    row = p1.measure("embedded", batch=2, rounds=1)
    for key in ("saccader_s", "networks_s", "bagnet_s", "cell_s"):
        assert row[key] > 0
    assert math.isclose(row["saccader/networks"], row["saccader_s"] / row["networks_s"])
    assert math.isclose(row["saccader/bagnet"], row["saccader_s"] / row["bagnet_s"])


def test_p2_times_the_training_session_and_a_bare_loop(smoke):
    row = p2.measure("bagnet77_lowd", steps=2, repeats=1, config=smoke)
    assert row["ours_img_s"] > 0 and row["bare_img_s"] > 0 and row["ours/bare_cpu"] > 0


def test_p3_counts_model_evaluations(smoke):
    fn = p3.Counting(torch.nn.Identity())
    fn(torch.zeros(5, 3)), fn(torch.zeros(2, 3))
    assert fn.inputs == 7 and fn.seconds >= 0
    config = copy.deepcopy(smoke)
    config["attack"]["spsa_early_stop"] = False  # fixed work: both SPSA loops evaluate the same number of inputs
    row = p3.measure(n=2, iters=1, config=config, sweep_images=4)
    per_step = 2 * config["attack"]["spsa_samples"]
    assert row["evals_ours"] == per_step and row["evals_upstream"] == per_step + 2  # + upstream's loss check
    assert 0 < row["spsa_fwd_share"] <= 1
    assert row["upstream_iters_to_match"] == 1 and row["spsa_vs_upstream_equal_success"] > 0  # --match 1: off
    matched = p3.measure(n=2, iters=1, config=config, sweep_images=0, eps_255=255.0, match=4)
    assert matched["upstream_iters_to_match"] in (1, 2, 4)
    assert matched["upstream_matched"] == (matched["upstream_success_to_match"] >= matched["success_ours"])


def test_data_path_decodes_generated_jpegs(tmp_path):
    paths = data_path.write_jpegs(tmp_path, 2, size=(40, 30))
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    assert Image.open(paths[0]).size == (40, 30)
    assert decode_jpeg(read_file(paths[0])).shape == (3, 30, 40)
    row = data_path.measure(n=2, workers=(0,), rounds=1)
    assert row["loader_w0_img_s"] > 0 and row["tv/pil_decode"] > 0
    emb = data_path.measure_embedded(n=2, rounds=1)
    assert emb["emb_item_cached_img_s"] > 0 and emb["appendix_c/compose"] > 0 and emb["resolution"] == 64
    assert emb["generator/forked_rng_item"] > 0 and emb["pack/decode_first_pass"] > 0


def test_gpu_script_refuses_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_train.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_projection_arithmetic_and_cpu_step(smoke):
    rate = gpu_train.train_rate(smoke, "bagnet77_lowd", 2, torch.device("cpu"), amp=True, channels_last=True,
                                steps=1, warmup=0)
    assert rate > 0
    rows = {r["run"]: r for r in gpu_train.projection(smoke, {"bagnet77_lowd": 100.0, "saccader": 50.0})}
    n = smoke["dataset"]["digits"]["train_images"] - smoke["dataset"]["dev_size"]
    rec = smoke["train"]["saccader_pretrain"]
    assert rows["saccader_pretrain"]["rate_from"] == "same model"
    assert math.isclose(rows["saccader_pretrain"]["gpu_hours"], rec["epochs"] * n * len(smoke["seeds"]) / 50 / 3600)
    assert rows["resnet_v2_50"]["rate_from"] == "assumed" and rows["resnet_v2_50"]["img_s"] == 100.0
    assert gpu_train.train_images(load(REPO / "config.yaml")) == 1_281_167 - 50_046


def test_p5_table_from_real_snakemake_benchmarks(tmp_path):
    # Snakemake itself writes the benchmark files, in the layout of workflow/rules/*.smk
    (tmp_path / "Snakefile").write_text(
        "rule all:\n    input: expand('res/done/{run}/seed{seed}', run=['a', 'b'], seed=[0, 1])\n"
        "rule train:\n    output: 'res/done/{run}/seed{seed}'\n"
        "    benchmark: 'res/benchmarks/train/{run}/seed{seed}.tsv'\n    shell: 'touch {output}'\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", "Snakefile"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    attack = tmp_path / "res" / "benchmarks" / "attack" / "saccader"
    attack.mkdir(parents=True)
    (attack / "seed0.tsv").write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\t"
                                      "cpu_time\n100.0\t0:01:40\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\n")
    frame = p5_rules.load(tmp_path / "res")
    assert sorted(frame["group"].unique()) == ["attack/saccader", "train/a", "train/b"]
    rules = p5_rules.table(frame, "rule")
    assert rules.loc["train", "jobs"] == 4 and rules.loc["attack", "total_s"] == 100.0
    assert rules["share"].sum() == pytest.approx(1.0) and rules.index[0] == "attack"
    text = p5_rules.markdown(frame, wall=200.0)
    assert "| attack | 1 | 100.0" in text and "| train/a | 2 |" in text and "Whole run: 200 s" in text
    with pytest.raises(UserError, match="no benchmark files"):
        p5_rules.load(tmp_path / "nothing")


def test_machine_line_names_cores():
    assert "cores" in common.machine()


def test_cpu_channels_last_reports_each_run_in_its_own_process(capsys):
    cpu_channels_last.main(["--runs", "resnet_v2_50", "nasnet", "--rounds", "1", "--batch", "2",
                            "--config", "config/smoke.yaml"])
    out = capsys.readouterr().out
    assert out.count("run=") == 2 and out.count("speedup=") == 2


def test_cpu_bf16_times_both_precisions_in_the_recipes_memory_format(capsys):
    cpu_bf16.main(["--runs", "nasnet", "resnet_v2_50", "--rounds", "1", "--batch", "2",
                   "--config", "config/smoke.yaml"])
    out = capsys.readouterr().out
    assert out.count("speedup=") == 2 and "fp32_s=" in out and "bf16_s=" in out
    assert "run=nasnet  channels_last=True" in out and "run=resnet_v2_50  channels_last=False" in out


def test_warmstart_times_fresh_and_warm_jobs_of_each_subcommand(capsys, monkeypatch):
    import shutil
    import tempfile

    tmp = tempfile.mkdtemp(prefix="wsb", dir="/tmp")  # its own server, on a short socket path
    monkeypatch.setenv("TMPDIR", tmp)
    try:
        warmstart.main(["--jobs", "1", "--commands", "params"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = capsys.readouterr().out
    assert "command=params  fresh_s=" in out and "warm_s=" in out and "speedup=" in out
    assert "starting the server" in out


def test_malloc_times_both_allocator_settings_in_child_processes(capsys):
    malloc.main(["--runs", "resnet_v2_50", "--rounds", "1", "--steps", "1", "--batch", "2",
                 "--config", "config/smoke.yaml"])
    out = capsys.readouterr().out
    assert out.count("run=resnet_v2_50") == 1 and "speedup=" in out and "peak_rss_ratio=" in out


def test_gpu_script_times_the_real_loop_and_writes_the_plan_contract(tiny_dataset, tmp_path, capsys):
    """`--device cpu` on a tiny config: the training session's loop (loader, steps, dev evaluation) beside the
    synthetic step,
    and gpu_train.json in the format `saccader plan` reads."""
    import json

    import yaml

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_dataset))
    out = tmp_path / "bench" / "gpu_train.json"
    runs = ["bagnet77_lowd", "saccader"]
    assert gpu_train.main(["--device", "cpu", "--config", str(config_path), "--runs", *runs, "--batch", "4",
                           "--steps", "2", "--warmup", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["torch"] == torch.__version__ and data["device"]
    by_key = {(r["run"], r["precision"]): r for r in data["runs"]}
    assert set(by_key) == {(r, p) for r in runs for p in ("fp32", "bf16")}
    for (run, precision), r in by_key.items():
        assert set(r) >= {"run", "micro_batch", "precision", "images_per_s", "resolution"}
        assert r["images_per_s"] > 0 and r["micro_batch"] == 4 and r["resolution"] == 64
        # the tiny recipes train in fp32 on CPU: that rate is the real loop's, bf16 the synthetic step's
        assert r["source"] == ("train_loop" if precision == "fp32" else "synthetic_step")
    rows = {r["run"]: r for r in data["rows"] if "loop_img_s" in r}
    assert set(rows) == set(runs)
    for row in rows.values():
        assert row["dev_eval_img_s"] > 0 and row["startup_s"] > 0 and row["loop/synthetic"] > 0
    assert "wrote" in capsys.readouterr().out


def test_gpu_loop_rate_runs_the_requested_steps_of_the_session(tiny_dataset, monkeypatch):
    from saccader.pipeline import train as T

    steps = []
    real = T.step_loss
    monkeypatch.setattr(T, "step_loss", lambda *a, **k: (steps.append(1), real(*a, **k))[1])
    row = gpu_train.loop_rate(copy.deepcopy(tiny_dataset), "bagnet77_lowd", 4, torch.device("cpu"), steps=3, warmup=1)
    assert len(steps) == 3 and row["loop_img_s"] > 0
