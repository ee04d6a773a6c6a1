"""The jobs of the DAG and their counts: ``build_jobs`` (one ``Job`` per rule and wildcards, from the functions the
workflow uses), the count cache keyed by what decides a count, and the process pool that fills it."""

from __future__ import annotations

import logging
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from saccader import catalog
from saccader.pipeline.config import init_runs, resolution
from saccader.pipeline.plan.counting import BATCH, Counter, SLOPE, count_attack, count_eval, count_train, fake_mode

log = logging.getLogger("saccader.pipeline.plan")

ROOT = Path(__file__).resolve().parents[3]


IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


COUNT_VERSION = 2      # bump when the counting code below changes: cached counts are then recomputed


def cache_key(config: dict, what: tuple) -> str:
    import torch

    part = {"what": what, "version": COUNT_VERSION, "models": config.get("models") or {}, "torch": torch.__version__,
            "dataset": {k: config["dataset"][k] for k in ("num_classes", "image_size", "high_res_size")},
            "train": config.get("train"), "evaluate": config.get("evaluate"), "attack": config.get("attack"),
            "code": _code_digest()}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _code_digest() -> str:
    """Hash of the model and training code the counts come from: editing it invalidates the cache."""
    h = hashlib.sha256()
    for folder in ("saccader/models", "baselines"):
        for path in sorted((ROOT / folder).glob("*.py")):
            h.update(path.read_bytes())
    for path in ("saccader/pipeline/train.py", "saccader/pipeline/evaluate.py", "saccader/losses.py"):
        h.update((ROOT / path).read_bytes())
    return h.hexdigest()[:16]


class Cache:
    def __init__(self, path: Path | None):
        self.path = path
        self.data = {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError):
                self.data = {}
        self.dirty = False

    def get(self, key: str, compute):
        if key not in self.data:
            self.data[key] = compute()
            self.dirty = True
        return self.data[key]

    def save(self):
        if self.path is not None and self.dirty:
            from saccader.pipeline.io import write_text

            write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


@dataclass
class Job:
    """One job of the DAG (per seed), its cost and what the profile gives it."""
    rule: str                 # train | evaluate | evaluate_glimpses | attack
    name: str                 # train/<run>, eval/<kind>/<model>, attack/<model>
    runs: list                # training runs whose model.pt it reads
    outputs: list             # output paths relative to results_dir, with {seed}
    resolution: int
    precision: str
    flops: float              # per seed job
    images: float             # images through the data loader per seed job (the ones it must decode)
    fwd_flops_per_image: float = 0.0
    step_flops_per_image: float = 0.0
    act_bytes_per_image: float = 0.0
    static_bytes: float = 0.0  # parameters, gradients, optimizer state, EMA, bf16 weight copies
    params: int = 0
    batch: int = 0             # global batch (train) or the job's batch
    ops: float = 0.0           # kernels a training job runs per seed (its steps and dev passes)
    train_images: float = 0.0  # images through the training steps per seed
    steps: int = 0             # optimizer steps per seed job
    dev_images: float = 0.0    # images of its dev evaluations
    checkpoints: int = 0       # checkpoint writes
    cached_images: float = 0.0  # images through the one-off frozen representation pass (cache_features)
    notes: list = field(default_factory=list)
    # filled by the planner
    gpu: str = ""
    world: int = 1
    micro_batch: int = 0
    micro_fit: int = 0
    accumulation: int = 1
    images_per_s_gpu: float = 0.0
    rate_source: str = ""
    data_images_per_s: float = 0.0
    data_wait: float = 1.0
    hours: float = 0.0
    gpu_hours: float = 0.0
    problems: list = field(default_factory=list)
    queries: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)  # CPU plans: projected seconds of each part of a training job


def dataset_sizes(config: dict) -> dict:
    """Images of the train (less dev), dev and test splits the jobs read."""
    ds = config["dataset"]
    if ds["name"] == "digits":
        d = ds["digits"]
        train, test = d["train_images"] - ds["dev_size"], d["val_images"]
    else:
        train, test = IMAGENET_TRAIN - ds["dev_size"], IMAGENET_VAL
    if config["evaluate"].get("max_images") is not None:
        test_eval = min(test, config["evaluate"]["max_images"])
    else:
        test_eval = test
    return {"train": train, "dev": ds["dev_size"], "test": test_eval, "attack": min(test, config["attack"]["subset_size"])}


def _count_key(config: dict, run: str) -> tuple:
    """What decides a training run's counts (not its lr, epochs, ...): runs that share it share one count."""
    rec = config["train"][run]
    keep = ("model", "stage", "num_glimpses", "mc_samples", "resolution", "bf16", "freeze", "cache_features",
            "glimpse_size", "label_smoothing", "location_modules", "eval_glimpses")
    return ("train",) + tuple((k, json.dumps(rec.get(k), sort_keys=True)) for k in keep)


def _spsa_active_fraction(config: dict, results_dir: Path, model: str) -> tuple[float, str]:
    """Fraction of SPSA queries an image makes with early stopping, and where the figure comes from: this
    experiment's attack results, else the embedded run's (``results/embedded``: the same attack on the small models,
    a stand-in until the experiment has its own)."""
    at = config["attack"]
    if not at.get("spsa_early_stop"):
        return 1.0, "early stop off"
    accs = []
    for folder in (results_dir, ROOT / "results" / "embedded"):
        for path in sorted((folder / "attack" / model).glob("seed*.parquet")):
            import pandas as pd

            frame = pd.read_parquet(path)
            acc = frame.loc[frame["metric"] == "spsa_acc", "value"]
            if len(acc):
                accs.append(float(acc.iloc[0]))
        if accs:
            results_dir = folder
            break
    if not accs:
        return 1.0, "no attack results yet: no early-stop saving assumed (an upper bound)"
    robust = sum(accs) / len(accs)
    # an image SPSA never fools runs every iteration; one it fools stops at an unknown step: half the run assumed
    return robust + (1 - robust) / 2, (f"SPSA accuracy {robust:.2f} measured in {results_dir}/attack/{model}: "
                                       "fooled images assumed to stop halfway")


def _counts(config: dict) -> dict:
    """Cache key -> (counting function, its arguments) of every count the DAG's jobs need."""
    tasks = {cache_key(config, _count_key(config, run)): ("count_train", (run,)) for run in sorted(config["train"])}
    for kind, models in catalog.EVALUATIONS.items():
        for model in models:
            tasks[cache_key(config, ("eval", kind, model))] = ("count_eval", (kind, model))
    for model in catalog.ATTACKS:
        tasks[cache_key(config, ("attack", model))] = ("count_attack", (model,))
    return tasks


def _count_task(config: dict, name: str, args: tuple) -> dict:
    import torch

    torch.set_num_threads(1)
    return globals()[name](config, *args)


def _count_item(item: tuple) -> tuple:
    config, key, name, args = item
    tick = time.process_time()
    value = _count_task(config, name, args)
    return key, value, os.getpid(), time.process_time() - tick


def _warm_up() -> None:
    """A tiny counted forward on fake tensors: the imports and first-use tables every count needs (fake tensor
    dispatch, decompositions, autocast), paid once in the process the counting processes fork from."""
    import torch

    import baselines.attacks  # noqa: F401  (the models' modules, imported once before the fork)
    import saccader.pipeline.evaluate  # noqa: F401
    import saccader.models  # noqa: F401

    with fake_mode():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.Flatten(), torch.nn.Linear(144, 2))
        with Counter(BATCH, SLOPE) as c, c.saving(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(torch.zeros(BATCH, 3, 8, 8)).float().sum()  # no backward: autograd's threads refuse a fork


def _backward_probe() -> None:
    import torch

    torch.ones(1, requires_grad=True).sum().backward()


def _start_method() -> str:
    """``fork`` where a forked child can run a backward: not after this process has run one itself (autograd's
    threads; a test session, say), nor where there is no fork. Else ``spawn``."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    probe = multiprocessing.get_context("fork").Process(target=_backward_probe)
    probe.start()
    probe.join()
    return "fork" if probe.exitcode == 0 else "spawn"


def _cost(config: dict, task: tuple) -> int:
    """Rough relative cost of a count, to start the longest first (NASNet's cells, DRAM's and the occlusion job's
    loops have 5-20x the ops of a ResNet step)."""
    name, args = task
    text = json.dumps(args) + json.dumps(config["train"].get(args[0], {}) if name == "count_train" else {})
    return 2 * ("nasnet" in text) + ("dram" in text) + ("occlusion" in text)


def fill_cache(config: dict, cache: Cache, workers: int = 2) -> dict:
    """Compute the counts the cache lacks, in ``workers`` processes forked from this one after a warm-up (so they
    neither import torch again nor rebuild its tables), the longest counts first. Returns the CPU seconds of the
    counts per process."""
    import multiprocessing

    todo = {k: v for k, v in _counts(config).items() if k not in cache.data}
    cpu: dict = {}
    if not todo:
        return cpu
    order = sorted(todo, key=lambda k: -_cost(config, todo[k]))
    workers = max(1, min(workers, len(todo)))
    log.info("counting FLOPs and memory of %d model configurations on fake tensors (%d processes)", len(todo),
             workers)
    items = [(config, k, *todo[k]) for k in order]
    if workers == 1:
        results = map(_count_item, items)
    else:
        method = _start_method()
        if method == "fork":
            _warm_up()
        pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap_unordered(_count_item, items)
    for k, value, pid, seconds in results:
        cache.data[k] = value
        cpu[pid] = cpu.get(pid, 0.0) + seconds
    if workers > 1:
        pool.close()
        pool.join()
    cache.dirty = True
    return cpu


def build_jobs(config: dict, cache: Cache, results_dir: Path) -> list[Job]:
    """Every GPU job of the DAG with its per-seed cost (counts from ``cache`` or computed)."""
    sizes = dataset_sizes(config)
    jobs = []
    for run in sorted(config["train"]):
        rec = config["train"][run]
        c = cache.get(cache_key(config, _count_key(config, run)), lambda run=run: count_train(config, run))
        steps = sizes["train"] // rec["batch_size"]
        steps = min(steps, rec.get("steps_per_epoch") or steps)  # a budget (wet run), as saccader.pipeline.train has it
        images = rec["epochs"] * steps * rec["batch_size"]
        evals = sum(1 for e in range(1, int(math.ceil(rec["epochs"])) + 1)
                    if e == math.ceil(rec["epochs"]) or e % rec.get("eval_every", 1) == 0)
        flops = images * c["step_flops"] + evals * sizes["dev"] * c["fwd_flops"]
        notes = []
        if "cache_flops" in c:
            flops += sizes["train"] * c["cache_flops"]
            notes.append("frozen representation computed once (cache_features)")
        dev_batches = math.ceil(sizes["dev"] / rec.get("eval_batch_size", rec["batch_size"]))
        ops = rec["epochs"] * steps * c.get("step_ops", 0) + evals * dev_batches * c.get("fwd_ops", 0)
        static = 4 * (c["params"] + 2 * c["trainable"]) + c["act_const_bytes"]
        if rec.get("ema_decay"):
            static += 4 * c["params"]
        job = Job("train", f"train/{run}", init_runs(run, config),
                  [f"runs/{run}/seed{{seed}}/model.pt", f"runs/{run}/seed{{seed}}/train_log.parquet"],
                  c["resolution"], c["precision"], flops, images + evals * sizes["dev"]
                  + (sizes["train"] if "cache_flops" in c else 0),
                  c["fwd_flops"], c["step_flops"], c["act_bytes"], static, c["params"], rec["batch_size"],
                  ops, images, notes)
        epochs = math.ceil(rec["epochs"])  # saccader.pipeline.train runs whole epochs
        every = rec.get("checkpoint_every", 0) or steps
        job.steps, job.dev_images = epochs * steps, evals * sizes["dev"]
        job.checkpoints = epochs * ((steps - 1) // every + 1)  # within each epoch, and at its end
        job.cached_images = sizes["train"] if "cache_flops" in c else 0
        jobs.append(job)
    for kind, models in catalog.EVALUATIONS.items():
        for model in models:
            c = cache.get(cache_key(config, ("eval", kind, model)), lambda k=kind, m=model: count_eval(config, k, m))
            rule = "evaluate_glimpses" if kind == "glimpses" else "evaluate"
            outs = [f"eval/{kind}/{model}/seed{{seed}}.parquet"]
            if kind == "glimpses":
                outs.append(outs[0] + ".examples.npz")
            passes = 2 if kind == "nasnet" else 1  # the nasnet job reads the test set at both resolutions
            jobs.append(Job(rule, f"eval/{kind}/{model}", catalog.required_runs(kind, model), outs,
                            c["resolution"], c["precision"], sizes["test"] * c["fwd_flops"], passes * sizes["test"],
                            c["fwd_flops"], 0.0, c["act_bytes"], c["act_const_bytes"] + 4 * c["params"],
                            c["params"], batch=config["evaluate"]["batch_size"]))
    at = config["attack"]
    for model in catalog.ATTACKS:
        c = cache.get(cache_key(config, ("attack", model)), lambda m=model: count_attack(config, m))
        active, source = _spsa_active_fraction(config, results_dir, model)
        spsa = at["spsa_iters"] * (at["spsa_samples"] + 1) * active  # samples + the early-stop check per step
        forwards = 1 + 1 + 1 + spsa  # clean, PGD result, SPSA result, SPSA queries
        per_image = forwards * c["fwd_flops"] + at["pgd_iters"] * c["grad_flops"]
        job = Job("attack", f"attack/{model}", catalog.attacked_runs(model), [f"attack/{model}/seed{{seed}}.parquet"],
                  c["resolution"], c["precision"], sizes["attack"] * per_image, sizes["attack"], c["fwd_flops"],
                  c["grad_flops"], max(c["act_bytes"] * at["eval_batch_size"], c["grad_bytes"] * at["batch_size"])
                  / at["batch_size"], 4 * c["params"] + c["act_const_bytes"], c["params"], batch=at["batch_size"],
                  notes=[f"{forwards:.0f} forwards + {at['pgd_iters']} PGD gradient steps per image ({source})"])
        job.queries = {"forwards_per_image": forwards, "pgd_gradients_per_image": at["pgd_iters"],
                       "spsa_active_fraction": active}
        jobs.append(job)
    return jobs
