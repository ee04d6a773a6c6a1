"""How each job fits the hardware: the GPU table, the profile's resources, the micro-batch that fits GPU memory, wall
time with requeues, host memory and the input pipeline (``plan_job``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


from saccader.errors import UserError
from saccader.pipeline.config import check_profile_resources, read as read_config
from saccader.pipeline.plan.counting import GIB
from saccader.pipeline.plan.jobs import Job, ROOT


# Data-centre GPUs: memory (GiB as the driver reports, about) and dense peak FLOP/s, no structured sparsity.
# fp32 is the rate an fp32 recipe gets: cuDNN convolutions use TF32 tensor cores by default on Ampere and later
# (torch.backends.cudnn.allow_tf32 = True), and convolutions are nearly all of these models' FLOPs.
# Sources (vendor datasheets): NVIDIA V100 (SXM2: 15.7 TFLOPS fp32, no bf16), A100 (19.5 fp32, 156 TF32,
# 312 bf16), H100 SXM (494.7 TF32, 989.5 bf16; the datasheet's 989 / 1,979 are with sparsity), H100 PCIe (378 TF32,
# 756 bf16), H200 SXM (as H100 SXM, 141 GB), L40S (183 TF32, 362 bf16 dense), AMD Instinct MI250X (95.7 fp32 matrix,
# 383 bf16), MI300X (163.4 TF32, 1,307.4 bf16).
@dataclass(frozen=True)
class GPU:
    memory_gib: float
    bf16_tflops: float | None  # None: no bf16 arithmetic (a bf16 recipe runs at the fp32 rate)
    fp32_tflops: float


GPUS = {
    "V100-32GB": GPU(32, None, 15.7),
    "A100-40GB": GPU(40, 312, 156),
    "A100-80GB": GPU(80, 312, 156),
    "H100-80GB-SXM": GPU(80, 989.5, 494.7),
    "H100-80GB-PCIe": GPU(80, 756, 378),
    "H200-141GB": GPU(141, 989.5, 494.7),
    "L40S-48GB": GPU(48, 362, 183),
    "MI250X-128GB": GPU(128, 383, 95.7),
    "MI300X-192GB": GPU(192, 1307.4, 163.4),
}


DEFAULT_GPU = "H100-80GB-SXM"


MFU = 0.3              # assumed model-FLOPs utilisation of a GPU training step (bf16 or TF32 convolutions)


USABLE_MEMORY = 0.9    # fraction of GPU memory the caching allocator can use (fragmentation)


CUDA_CONTEXT_GIB = 1.0  # CUDA context and cuDNN workspaces, outside torch's accounting


HOST_BASE_GIB = 4.0    # host memory of one training process (torch, CUDA libraries, a state dict on save)


PREFETCH = 2           # DataLoader prefetch_factor: batches in flight per worker


GPU_RULES = ("train", "evaluate", "evaluate_glimpses", "attack")


def load_profile(profile: str | None) -> tuple[dict, str]:
    """``set-resources`` of a Snakemake profile (a name under the repository, a folder or its config.yaml), and
    where it came from; no profile: the local defaults of workflow/rules/common.smk (no GPU)."""
    if profile is None:
        local = dict(gpu=0, cpus_per_task=1, mem_mb=4000, runtime=24 * 60)
        return {rule: dict(local) for rule in GPU_RULES}, "local defaults (workflow/rules/common.smk)"
    path = Path(profile)
    for candidate in (path, ROOT / profile):
        if candidate.is_dir():
            candidate = candidate / "config.yaml"
        if candidate.is_file():
            data = read_config(candidate)  # one line for a file that is not YAML
            check_profile_resources(data.get("set-resources") or {})
            return data.get("set-resources") or {}, str(candidate)
    raise UserError(f"profile {profile} not found", "pass --profile slurm or the folder of your profile")


def _resource(profile: dict, rule: str, key: str, default):
    value = (profile.get(rule) or {}).get(key, default)
    return default if value is None else value


def gpu_spec(name: str) -> GPU:
    if name not in GPUS:
        raise UserError(f"unknown GPU {name!r}", f"use one of {', '.join(GPUS)} (or set gpu_name in the profile)")
    return GPUS[name]


def load_measured(results_dir: Path) -> dict:
    """Measured images/s per GPU of bench/gpu_train.py, keyed by (run, precision, resolution)."""
    path = results_dir / "benchmarks" / "gpu_train.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {(r["run"], r["precision"], int(r["resolution"])): {**r, "device": data.get("device", "?")}
            for r in data.get("runs", [])}


@dataclass
class Settings:
    gpu: str | None = None        # --gpu: overrides the profile's gpu_name
    mfu: float = MFU
    cpu_rates: dict | None = None  # {"bf16": FLOP/s, "fp32": FLOP/s}: plan for this CPU instead of GPUs
    cpu_runs: dict = field(default_factory=dict)  # run -> measure_cpu_run's seconds of the parts of its job
    cpu_start_s: float = 0.0      # starting a job's processes on this CPU
    transform_rates: dict = field(default_factory=dict)  # {(resolution, train): images/s per core}


def _divisor_at_most(n: int, limit: int) -> int:
    return max((d for d in range(1, n + 1) if n % d == 0 and d <= limit), default=0)


def plan_job(job: Job, config: dict, profile: dict, settings: Settings, measured: dict) -> None:
    """Fill the job's GPU, micro-batch, throughput, data and time figures, and its problems against the profile."""
    rule, run = job.rule, job.name.split("/", 1)[1]
    gpus = int(_resource(profile, rule, "gpu", 0))
    nodes = int(_resource(profile, rule, "nodes", 1)) if rule == "train" else 1
    cpus = int(_resource(profile, rule, "cpus_per_task", 1))
    runtime = float(_resource(profile, rule, "runtime", 24 * 60))
    mem_mb = float(_resource(profile, rule, "mem_mb", 4000))
    job.world = max(1, gpus) * nodes
    if settings.cpu_rates is not None:
        job.gpu = "cpu"
        if rule == "train":  # on a CPU, bf16 only where the recipe asks and the CPU has it (train.use_bf16)
            import torch

            from saccader.pipeline.train import use_bf16

            job.precision = "bf16" if use_bf16(config["train"][run], torch.device("cpu")) else "fp32"
        elif rule == "attack":  # attacks run fp32 on a CPU (saccader.pipeline.attack.attack)
            job.precision = "fp32"
        rate = settings.cpu_rates[job.precision]
        job.rate_source = f"{rate / 1e9:.1f} GFLOP/s (median of the training steps measured on this CPU)"
    else:
        job.gpu = settings.gpu or _resource(profile, rule, "gpu_name", DEFAULT_GPU)
        spec = gpu_spec(job.gpu)
        peak = spec.bf16_tflops if job.precision == "bf16" and spec.bf16_tflops else spec.fp32_tflops
        rate = settings.mfu * peak * 1e12
        job.rate_source = f"MFU {settings.mfu:g} x {peak:g} TFLOP/s ({job.precision})"
        if gpus == 0:
            job.problems.append(f"{job.name}: the profile gives rule {rule} no GPU; fix: set-resources.{rule}.gpu: 1"
                                f" (or more for train)")
        _fit(job, spec, gpus, nodes, int(_resource(profile, rule, "micro_batch", 0) or 0))
        if rule == "train" and job.accumulation > 1:
            from saccader.pipeline.train import SAMPLING_STAGES

            if config["train"][run].get("stage") in SAMPLING_STAGES:  # the global baseline's no-grad pre-pass
                job.flops += job.train_images * job.fwd_flops_per_image
                job.notes.append("micro-batched sampling stage: one more forward per image for the baseline")
    per_image = job.step_flops_per_image if rule == "train" else job.flops / max(job.images, 1)
    job.images_per_s_gpu = rate / per_image if per_image else 0.0
    seconds = job.flops / (rate * job.world)
    if rule == "train" and run in settings.cpu_runs:
        m = settings.cpu_runs[run]
        job.parts = {"start": settings.cpu_start_s, "setup": m["setup_s"], "loop": job.steps * m["step_s"],
                     "checkpoints": job.checkpoints * m["checkpoint_s"], "dev": job.dev_images * m["dev_s_per_image"],
                     "cache": job.cached_images * m.get("cache_s_per_image", 0.0)}
        seconds = sum(job.parts.values())
        job.images_per_s_gpu = job.batch / m["step_s"]
        job.rate_source = (f"its loop measured on this CPU: {m['step_s']:.3f} s a step ({m['flops_per_s'] / 1e9:.1f} "
                           "GFLOP/s), dev pass, checkpoints, start")
    key = (run, job.precision, job.resolution)
    if rule == "train" and key in measured and settings.cpu_rates is None:
        m = measured[key]
        seconds *= job.images_per_s_gpu / m["images_per_s"]
        job.images_per_s_gpu = m["images_per_s"]
        job.rate_source = f"measured {m['images_per_s']:.0f} img/s at micro-batch {m['micro_batch']} ({m['device']})"
    _data(job, config, cpus, settings)
    job.hours = seconds * job.data_wait / 3600
    job.gpu_hours = job.hours * job.world if settings.cpu_rates is None else 0.0
    _check_time(job, config, rule, runtime)
    if rule == "train" and settings.cpu_rates is None:
        _check_host_memory(job, config, gpus, mem_mb)


def _fit(job: Job, spec: GPU, gpus: int, nodes: int, micro: int) -> None:
    """The largest micro-batch that fits the GPU and divides the per-GPU batch; the profile's, checked."""
    usable = spec.memory_gib * GIB * USABLE_MEMORY - CUDA_CONTEXT_GIB * GIB
    free = usable - job.static_bytes
    job.micro_fit = int(free // job.act_bytes_per_image) if job.act_bytes_per_image > 0 else job.batch
    if job.rule != "train":
        if job.micro_fit < job.batch:
            job.problems.append(f"{job.name}: batch {job.batch} needs about "
                                f"{(job.static_bytes + job.batch * job.act_bytes_per_image) / GIB:.0f} GiB on a "
                                f"{job.gpu}; fix: lower its batch_size to {job.micro_fit} or use a larger GPU")
        job.micro_batch = job.batch
        return
    world = max(1, gpus) * nodes
    if job.batch % world:
        job.problems.append(f"{job.name}: batch {job.batch} does not divide among {world} GPUs; fix: set nodes x gpu "
                            f"to a divisor of {job.batch}")
        return
    per_rank = job.batch // world
    if job.micro_fit < 1:
        job.problems.append(f"{job.name}: one image needs {job.act_bytes_per_image / GIB:.1f} GiB beyond "
                            f"{job.static_bytes / GIB:.1f} GiB of weights and optimizer state; fix: a GPU with "
                            f"more memory")
        return
    if micro:
        if per_rank % micro:
            job.problems.append(f"{job.name}: micro_batch {micro} does not divide the per-GPU batch {per_rank}; fix: "
                                f"set-resources.train.micro_batch: {_divisor_at_most(per_rank, job.micro_fit)}")
        elif micro > job.micro_fit:
            job.problems.append(f"{job.name}: micro_batch {micro} does not fit a {job.gpu} (at most "
                                f"{job.micro_fit}); fix: set-resources.train.micro_batch: "
                                f"{_divisor_at_most(per_rank, job.micro_fit)}")
        job.micro_batch = micro
    else:
        job.micro_batch = per_rank
        if per_rank > job.micro_fit:
            job.problems.append(f"{job.name}: the per-GPU batch {per_rank} does not fit a {job.gpu} (at most "
                                f"{job.micro_fit} images); fix: set-resources.train.micro_batch: "
                                f"{_divisor_at_most(per_rank, job.micro_fit)} (accumulation), or more GPUs")
            job.micro_batch = _divisor_at_most(per_rank, job.micro_fit)
    job.accumulation = per_rank // job.micro_batch if job.micro_batch else 0


def _data(job: Job, config: dict, cpus: int, settings: Settings) -> None:
    """Images/s the loader workers of one GPU's process deliver against what its GPU consumes (JPEG datasets)."""
    if config["dataset"]["name"] == "digits" or job.rule == "attack":
        return
    train = job.rule == "train" and "cache_features" not in " ".join(job.notes)
    core = settings.transform_rates.get((job.resolution, train))
    if not core:
        return
    workers = min(config["dataset"]["num_workers"], cpus) or 1
    job.data_images_per_s = core * workers
    need = job.images_per_s_gpu  # images one GPU consumes per second
    job.data_wait = max(1.0, need / job.data_images_per_s)
    if config["dataset"]["num_workers"] == 0:  # decoding in the training process adds to the step, never overlaps
        job.data_wait = 1.0 + need / job.data_images_per_s
    if job.data_wait > 1.05:
        want = math.ceil(need / core)
        job.problems.append(f"{job.name}: waits on data ({need:.0f} img/s needed per GPU, {job.data_images_per_s:.0f}"
                            f" from {workers} loader workers at {core:.0f} img/s a core): {job.data_wait:.1f}x "
                            f"longer; fix: cpus_per_task and dataset.num_workers >= {want}")


def _check_time(job: Job, config: dict, rule: str, runtime: float) -> None:
    # Every job is requeued at its time limit; training resumes from checkpoint.pt and an attack after its last
    # finished batch (saccader.pipeline.attack), while an evaluation starts again: it must fit one allocation.
    requeues = config["executor"]["max_requeues"] if rule in ("train", "attack") else 0
    limit = runtime * (1 + requeues) / 60
    if job.hours <= limit:
        return
    if rule in ("train", "attack"):
        need = math.ceil(job.hours * 60 / runtime) - 1
        more = "more GPUs" if rule == "train" else "a smaller attack.subset_size / spsa_iters"
        job.problems.append(f"{job.name}: {job.hours:.1f} h projected, the profile allows {runtime / 60:.0f} h x "
                            f"{1 + requeues} allocations; fix: executor.max_requeues >= {need} or a longer "
                            f"set-resources.{rule}.runtime, or {more}")
    else:
        job.problems.append(f"{job.name}: {job.hours:.1f} h projected, over its {runtime / 60:.0f} h limit (it "
                            f"starts again when requeued); fix: set-resources.{rule}.runtime >= "
                            f"{math.ceil(job.hours * 60 * 1.2)}")


def _check_host_memory(job: Job, config: dict, gpus: int, mem_mb: float) -> None:
    """Host memory of one node: a process per GPU (libraries, a state dict) plus the loader batches in flight."""
    per_rank = job.batch // max(1, job.world)
    batch_bytes = per_rank * 3 * job.resolution ** 2 * 4
    workers = config["dataset"]["num_workers"]
    need = max(1, gpus) * (HOST_BASE_GIB * GIB + 4 * job.params + batch_bytes * (workers * PREFETCH + 2))
    if need > mem_mb * 2 ** 20:
        job.problems.append(f"{job.name}: about {need / GIB:.0f} GiB of host memory per node needed, mem_mb gives "
                            f"{mem_mb / 1024:.0f} GiB; fix: set-resources.train.mem_mb >= {math.ceil(need / 2 ** 20)}")
