"""The plan of every job (``plan``), its totals per target, the assumptions, the table, ``plan.md`` and ``plan.json``,
and the comparison with Snakemake's benchmark files."""

from __future__ import annotations

import fnmatch
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from saccader import catalog
from saccader.pipeline.plan.counting import GIB
from saccader.pipeline.plan.jobs import Cache, Job, build_jobs, cache_key, fill_cache
from saccader.pipeline.plan.fit import CUDA_CONTEXT_GIB, Settings, USABLE_MEMORY, load_measured, load_profile, plan_job
from saccader.pipeline.plan.measure import load_transform_rates, machine, transform_rate, write_jpegs


def target_jobs(jobs: list[Job]) -> dict[str, set]:
    """catalog.TARGETS -> the names of the jobs it needs (the producers of its inputs and their training runs)."""
    producers = {}
    for job in jobs:
        for out in job.outputs:
            producers[out.replace("{seed}", "*")] = job.name
    by_run = {j.name.split("/", 1)[1]: j for j in jobs if j.rule == "train"}

    def upstream(names: set) -> set:
        todo, seen = list(names), set(names)
        while todo:
            name = todo.pop()
            job = next(j for j in jobs if j.name == name)
            for run in job.runs:
                name = f"train/{run}"
                if run in by_run and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return seen

    out = {}
    for name, target in catalog.TARGETS.items():
        direct = {job for pattern, job in producers.items()
                  for inp in target.inputs if fnmatch.fnmatch(pattern.replace("*", "0"), inp)}
        for other, t in catalog.TARGETS.items():  # a target that reads another target's outputs (the index)
            if other != name and any(fnmatch.fnmatch(o, inp) for o in t.outputs for inp in target.inputs):
                direct |= out.get(other, set())
        out[name] = upstream(direct)
    return out


def plan(config: dict, profile: str | None = None, settings: Settings | None = None,
         cache_path: Path | None = None, workers: int = 2, source: str = "") -> dict:
    """The plan of every job of ``config`` (read from the files ``source`` names) under ``profile``: a JSON-ready
    dict (see ``format_markdown``)."""
    settings = settings or Settings()
    results_dir = Path(config["results_dir"])
    resources, profile_source = load_profile(profile)
    cache = Cache(cache_path)
    if config["dataset"]["name"] != "digits" and not settings.transform_rates:
        settings.transform_rates = load_transform_rates(results_dir)
    if config["dataset"]["name"] != "digits" and not settings.transform_rates:
        with tempfile.TemporaryDirectory() as tmp:
            jpegs = []  # written once, for every resolution and transform, when a rate is not cached
            for res in sorted({config["dataset"]["image_size"], config["dataset"]["high_res_size"]}):
                for train in (True, False):
                    def measure(r=res, t=train):
                        jpegs[:] = jpegs or write_jpegs(Path(tmp), 24)
                        return transform_rate(config, r, t, paths=jpegs)

                    key = cache_key(config, ("transform", res, train, machine()))
                    settings.transform_rates[(res, train)] = cache.get(key, measure)
    cpu_before = time.process_time()  # this process's CPU seconds up to the counts (imports, transform rates)
    count_cpu = fill_cache(config, cache, workers)
    jobs = build_jobs(config, cache, results_dir)
    cache.save()
    measured = load_measured(results_dir)
    for job in jobs:
        plan_job(job, config, resources, settings, measured)
    seeds = len(config["seeds"])
    by_name = {j.name: j for j in jobs}
    targets = {name: {"gpu_hours": seeds * sum(by_name[n].gpu_hours for n in names),
                      "hours_serial": seeds * sum(by_name[n].hours for n in names), "jobs": sorted(names)}
               for name, names in target_jobs(jobs).items()}
    return {
        "config": source, "results_dir": str(results_dir), "profile": profile_source,
        "seeds": seeds, "machine": machine(), "mfu": settings.mfu,
        "cpu_rates": settings.cpu_rates, "cpu_runs": settings.cpu_runs, "cpu_start_s": settings.cpu_start_s,
        "transform_rates": {f"{r}px {'train' if t else 'eval'}": v for (r, t), v in settings.transform_rates.items()},
        "measured": bool(measured),
        # CPU seconds of this process before the counts (imports, transform rates) and of the counts in each
        # counting process: the wall time on free cores is about the first plus the largest of the second
        "timing": {"cpu_s_before_counts": cpu_before, "count_cpu_s": sorted(count_cpu.values(), reverse=True)},
        "assumptions": assumptions(settings, bool(measured)),
        "jobs": [asdict(j) for j in jobs],
        "totals": {"all": {"gpu_hours": seeds * sum(j.gpu_hours for j in jobs),
                           "hours_serial": seeds * sum(j.hours for j in jobs), "jobs": len(jobs) * seeds},
                   "targets": targets},
        "problems": [p for j in jobs for p in j.problems],
    }


def assumptions(settings: Settings, measured: bool) -> list[str]:
    lines = []
    if settings.cpu_rates is None:
        lines.append(f"throughput: {settings.mfu:g} of the GPU's dense peak (MFU) at the recipe's precision, "
                     "ideal data-parallel scaling"
                     + ("; measured images/s of results/benchmarks/gpu_train.json where a run has them" if measured
                        else "; no results/benchmarks/gpu_train.json yet (bench/gpu_train.py on a GPU replaces it)"))
        lines.append(f"GPU memory: {USABLE_MEMORY:g} of it usable, {CUDA_CONTEXT_GIB:g} GiB CUDA context; activations "
                     "= peak of the tensors alive in a training step (fake tensors), plus parameters, gradients, SGD "
                     "momentum (and EMA) in fp32")
    else:
        lines.append(f"throughput on this CPU with a core per job, measured now in CPU seconds: a training job = "
                     f"start ({settings.cpu_start_s:.1f} s: "
                     "launcher and job interpreters, project imports) + setup + steps x its measured loop iteration "
                     "(data loading included) + dev images x the per-image evaluate() time + checkpoints x one "
                     "checkpoint.save; evaluation and attack jobs: FLOPs / the median achieved FLOP rate of the "
                     "training steps of their precision. A job that shares its core takes longer in wall time")
    lines.append("evaluation memory: peak of the tensors alive in a no-grad forward; attack: the larger of PGD's "
                 "saved bytes x attack.batch_size and SPSA's no-grad peak x attack.eval_batch_size")
    lines.append("data: loader workers = min(dataset.num_workers, cpus_per_task), each one core at the measured "
                 "Appendix C transform rate; digits datasets are not modelled")
    lines.append("time limits: training and attack jobs resume across executor.max_requeues requeues; evaluation "
                 "jobs must finish in one allocation")
    return lines


COLUMNS = ("job", "GPUs", "prec", "res", "GFLOP/img fwd", "GFLOP/img step", "act MiB/img", "static GiB",
           "micro (fit)", "accum", "img/s/GPU", "data img/s (wait)", "h/seed", "GPU-h all seeds")


def rows(result: dict) -> list[list[str]]:
    seeds = result["seeds"]
    out = []
    for j in result["jobs"]:
        out.append([
            j["name"], f"{j['world']}x{j['gpu']}", j["precision"], str(j["resolution"]),
            f"{j['fwd_flops_per_image'] / 1e9:.2f}", f"{j['step_flops_per_image'] / 1e9:.2f}" if j["step_flops_per_image"]
            else "-", f"{j['act_bytes_per_image'] / 2 ** 20:.1f}", f"{j['static_bytes'] / GIB:.2f}",
            f"{j['micro_batch']} ({j['micro_fit']})" if j["micro_fit"] else "-", str(j["accumulation"]),
            f"{j['images_per_s_gpu']:.3g}", f"{j['data_images_per_s']:.0f} ({j['data_wait']:.1f}x)" if j["data_images_per_s"] else "-",
            f"{j['hours']:.2f}", f"{seeds * j['gpu_hours']:.1f}"])
    return out


def format_table(result: dict) -> str:
    table = [list(COLUMNS)] + rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table)


def format_markdown(result: dict) -> str:
    lines = [f"# Plan of {result['config']} ({result['seeds']} seeds)", "",
             f"Profile: {result['profile']}. Counted on {result['machine']}.", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(result)]
    t = result["totals"]
    lines += ["", f"**All**: {t['all']['gpu_hours']:.0f} GPU-hours, {t['all']['jobs']} jobs.", "",
              "| target | GPU-hours | jobs |", "|---|---|---|"]
    lines += [f"| {n} | {v['gpu_hours']:.0f} | {len(v['jobs'])} |" for n, v in t["targets"].items()]
    lines += ["", "## Problems", ""] + ([f"- {p}" for p in result["problems"]] or ["None."])
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in result["assumptions"]]
    if result["transform_rates"]:
        lines.append("- Appendix C transform on ImageNet-sized JPEGs, images/s per core on this machine: "
                     + ", ".join(f"{k} {v:.0f}" for k, v in result["transform_rates"].items()))
    return "\n".join(lines) + "\n"


def write(result: dict, results_dir: Path) -> list[Path]:
    from saccader.pipeline.io import write_text

    md, js = results_dir / "plan.md", results_dir / "plan.json"
    write_text(md, format_markdown(result))
    write_text(js, json.dumps(result, indent=1, default=str) + "\n")
    return [md, js]


def compare_benchmarks(result: dict, bench_dir: Path) -> list[dict]:
    """Projected against recorded seconds of the training jobs of a real run (Snakemake's ``benchmark:`` files,
    ``<bench_dir>/train/<run>/seed<N>.tsv``: ``s`` wall seconds). Where the run's ``train_log.parquet`` sits beside
    (``<bench_dir>/../runs/<run>/seed<N>/``), also the seconds its training loop recorded (dev passes and
    checkpoints left out) against the projected loop, which tells a slower step from slower overheads."""
    import pandas as pd

    out = []
    for job in result["jobs"]:
        if job["rule"] != "train":
            continue
        run = job["name"].split("/", 1)[1]
        for path in sorted((Path(bench_dir) / "train" / run).glob("seed*.tsv")):
            row = pd.read_csv(path, sep="\t").iloc[0]
            projected = job["hours"] * 3600
            item = {"run": run, "seed": path.stem, "precision": job["precision"], "projected_s": projected,
                    "wall_s": float(row["s"]), "projected/wall": projected / float(row["s"])}
            log_path = Path(bench_dir).parent / "runs" / run / path.stem / "train_log.parquet"
            if job.get("parts") and log_path.is_file():
                loop = float(pd.read_parquet(log_path)["seconds"].sum())
                item.update({"loop_s": loop, "projected_loop_s": job["parts"]["loop"],
                             "projected/loop": job["parts"]["loop"] / loop,
                             "rest_s": float(row["s"]) - loop, "projected_rest_s": projected - job["parts"]["loop"]})
            out.append(item)
    return out
