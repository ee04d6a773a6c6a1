"""GPU readiness on a CPU: the classes of bug a first CUDA run would meet, each kept from coming back.

- Random draws on the wrong device: ``GeneratorDevices`` fails when a random call's generator belongs to another
  device than the tensors it draws or reads (a CPU draw copied to the GPU, or "Expected a 'cuda' device type for
  generator" on the day a CUDA generator is passed). Run on the ``meta`` device with a CPU generator standing in
  for a generator of that device, it catches any draw that forgets ``device=``.
- Host waits: every stage's training step and every evaluation path run on the ``meta`` device, where ``.item()``,
  ``bool(tensor)`` and tensor-dependent control flow raise.
- bf16 where it should not be: under CPU bf16 autocast, sampling and log-probabilities stay float32.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from baselines import attacks
from baselines import policies as engineered
from saccader.pipeline import evaluate as E
from saccader.pipeline import config as C
from saccader.pipeline import train as T
from saccader.pipeline.config import load_experiment
from saccader.models import from_config

META = torch.device("meta")
N = 2


class GeneratorDevices(TorchFunctionMode):
    """Fails when a random call's generator is on another device than its output or its tensor arguments.

    ``stand_in`` maps generators to the device they stand for (a CPU generator for ``meta``, which has none).
    """

    def __init__(self, stand_in: dict[int, str] | None = None):
        super().__init__()
        self.stand_in, self.calls = dict(stand_in or {}), 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for gen in (a for a in (*args, *kwargs.values()) if isinstance(a, torch.Generator)):
            self.calls += 1
            want = self.stand_in.get(id(gen), gen.device.type)
            found = {t.device.type for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)}
            if found - {want}:
                raise AssertionError(f"{getattr(func, '__name__', func)}: a generator of device {want} draws or reads "
                                     f"tensors on {sorted(found - {want})}")
        return out


def meta_generator() -> tuple[torch.Generator, GeneratorDevices]:
    gen = torch.Generator().manual_seed(0)
    return gen, GeneratorDevices({id(gen): "meta"})


def test_guard_catches_a_host_draw_copied_to_the_device():
    gen, guard = meta_generator()
    with guard:
        torch.rand(3, generator=gen, device=META)
        with pytest.raises(AssertionError, match="generator of device meta"):
            torch.rand(3, generator=gen).to(META)  # drawn on the host, then copied
        with pytest.raises(AssertionError, match="generator of device cpu"):
            torch.multinomial(torch.ones(2, 3, device=META), 1, generator=torch.Generator())
    assert guard.calls == 3


@pytest.fixture(scope="module")
def smoke():
    return load_experiment("config/smoke.yaml")


STAGE_RUNS = ["bagnet77_lowd", "saccader_pretrain", "saccader", "dram_pretrain_narrow", "dram", "nasnet_77",
              "nasnet_113"]


def _meta_run(smoke, run: str):
    rec = C.train_recipe(smoke, run)
    model = from_config(rec["model"], smoke).to(META)
    optimizer = torch.optim.SGD(T.param_groups(model, rec), lr=0.1, momentum=T.MOMENTUM, nesterov=True)
    res = C.resolution(smoke, rec)
    images = torch.randn(N, 3, res, res, device=META)
    labels = torch.randint(0, smoke["dataset"]["num_classes"], (N,), device=META)
    return rec, model, optimizer, images, labels


def test_every_stage_is_covered(smoke):
    assert {C.recipe(smoke, r)["stage"] for r in STAGE_RUNS} == set(T.STAGES)


@pytest.mark.parametrize("run", STAGE_RUNS)
def test_training_step_has_no_host_wait_and_draws_on_the_device(smoke, run):
    """Forward, backward and optimizer step of every stage on ``meta`` (a host wait raises there), with every random
    draw checked to come from a generator of the data's device."""
    rec, model, optimizer, images, labels = _meta_run(smoke, run)
    T.train_mode(model)
    if rec.get("drop_path_epochs"):
        T.set_drop_path_progress(model, 0.5)
    gen, guard = meta_generator()
    with guard:
        loss, right = T.step_loss(model, rec, images, labels, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert loss.device == META and right.shape == (N,)
    if rec["stage"] in ("reinforce", "dram_pretrain", "dram"):
        assert guard.calls > 0  # the stage samples, so the guard saw its draws


@pytest.mark.parametrize("run", STAGE_RUNS)
def test_predict_has_no_host_wait(smoke, run):
    rec, model, _, images, _ = _meta_run(smoke, run)
    model.eval()
    logits = T.predict(model, rec, images)
    assert logits.shape == (N, smoke["dataset"]["num_classes"]) and logits.device == META


def _meta_models(smoke, *runs):
    return {r: from_config(C.recipe(smoke, r)["model"], smoke).to(META).eval() for r in runs}


def test_evaluation_batches_have_no_host_wait(smoke):
    """The per-batch work of every evaluation job on ``meta``, the random policy's draws checked by the guard."""
    ev, ds = smoke["evaluate"], smoke["dataset"]
    size = ds["image_size"]
    images = torch.randn(N, 3, size, size, device=META)
    labels = torch.randint(0, ds["num_classes"], (N,), device=META)
    tally = E._Tally()
    gen, guard = meta_generator()
    with torch.no_grad(), guard:
        for run in ("saccader", "bagnet77_lowd", "dram"):
            E.glimpses_batch(_meta_models(smoke, run), images, labels, ev, gen, size, tally)
        E.full_image_batch(_meta_models(smoke, "resnet_v2_50")["resnet_v2_50"], images, labels, size, tally)
        sources = _meta_models(smoke, "bagnet77_lowd", "saccader", "dram")
        E.occlusion_batch(_meta_models(smoke, "resnet_v2_50")["resnet_v2_50"], sources, images, labels, ev,
                          torch.zeros(3, device=META), gen, size, tally)
        nasnet = from_config("saccader_nasnet", smoke).to(META).eval()
        high = ds["high_res_size"]
        E.nasnet_batch(nasnet, images, labels, None, ev["max_glimpses"], size, size, tally)
        E.nasnet_batch(nasnet, images, labels, torch.randn(N, 3, high, high, device=META), ev["max_glimpses"], size,
                       high, tally)
    assert guard.calls > 0  # the random policy drew
    policies = {key[0] for key in tally.counts}
    assert policies == {"saccader", "dram", "full_image", *ev["policies"]}


def test_tally_reads_each_key_once_with_the_arithmetic_of_per_batch_reads():
    tally = E._Tally()
    values = [torch.rand(7, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    for v in values:
        tally.add(("p", 64, 1, "top1"), v)
    expected = 0.0
    for v in values:
        expected += float(v.sum())
    (row,) = tally.rows()
    assert row["value"] == expected / 35 and row["n_images"] == 35


def test_spsa_draws_on_the_inputs_device():
    x = torch.rand(N, 3, 8, 8, device=META)
    y = torch.zeros(N, dtype=torch.long, device=META)
    linear = torch.nn.Linear(3 * 8 * 8, 4).to(META)
    gen, guard = meta_generator()
    with guard:
        v = attacks.spsa_gradient(lambda q, i: linear(q.flatten(1)).sum(1), x, torch.zeros_like(x), 0.01, 8, 8, gen)
        adv = attacks.spsa(lambda z: linear(z.flatten(1)), x, y, 2 / 255, 2, spsa_samples=4, eval_batch_size=8,
                           early_stop_loss_threshold=None, generator=gen)
    assert v.device == META and adv.device == META and guard.calls >= 3


def test_random_policy_draws_on_the_device():
    gen, guard = meta_generator()
    with guard:
        cells = engineered.random_policy(N, (3, 4), 5, gen, META)
    assert cells.device == META and cells.shape == (N, 5)


def test_sampling_and_log_probs_are_float32_under_cpu_bf16_autocast(smoke):
    """Float32 inputs, bf16 autocast: the Saccader cell's policy, samples and log-probabilities, the eq 5 ranking
    logits, and DRAM's locations and log-probabilities stay float32 (ties and rounding in bf16)."""
    from saccader import losses

    torch.manual_seed(0)
    size = smoke["dataset"]["image_size"]
    images = torch.rand(N, 3, size, size)
    saccader = from_config("saccader", smoke).train()
    dram = from_config("dram", smoke).train()
    gen = torch.Generator().manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = saccader.backbone(images)
        assert out["mixed"].dtype == torch.bfloat16  # autocast is really on for the networks
        assert out["logits2d"].dtype == torch.float32
        targets = losses.ordered_logits_targets(out["logits2d"], 4)
        roll = saccader.rollout(out["mixed"], out["logits2d"], 4, sample=True, generator=gen)
        fixed = saccader.rollout(out["mixed"], out["logits2d"], 4, targets=targets)
        res = dram(images, 2, sample=True, generator=gen)
        pre = dram.pretrain_forward(images, num_steps=2, generator=gen)
    for key in ("policy_logits", "log_probs", "glimpse_logits"):
        assert roll[key].dtype == torch.float32 and fixed[key].dtype == torch.float32, key
    for key in ("locations", "means", "log_probs"):
        assert res[key].dtype == torch.float32, key
    assert pre.dtype == torch.bfloat16  # the classification path itself stays in the recipe's precision


def test_eq5_targets_rank_float32_logits_of_the_representation(smoke):
    """Under bf16 autocast the Saccader's logits2d are float32 (no ties between neighbouring cells), and its targets
    are those ranked from the same logits outside autocast."""
    from saccader import losses

    torch.manual_seed(0)
    saccader = from_config("saccader", smoke).eval()
    size = smoke["dataset"]["image_size"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits2d = saccader.backbone(torch.rand(8, 3, size, size))["logits2d"]
        targets = losses.ordered_logits_targets(logits2d, 12)
    assert logits2d.dtype == torch.float32
    assert torch.equal(targets, losses.ordered_logits_targets(logits2d, 12))
    top = logits2d.mean((2, 3)).argmax(1)
    score = logits2d[torch.arange(8), top].flatten(1).topk(13, dim=1).values
    assert (score[:, 1:] != score[:, :-1]).all()  # bf16 logits tie here (37 of 384 neighbours in one draw)


@pytest.mark.parametrize("run", ["saccader", "dram", "saccader_pretrain"])
def test_micro_batched_step_has_no_host_wait_and_draws_on_the_device(smoke, run):
    """The micro-batched step (gradient accumulation, with the sampling stages' global baseline pre-pass)."""
    rec, model, optimizer, images, labels = _meta_run(smoke, run)
    images, labels = torch.cat([images] * 2), torch.cat([labels] * 2)
    T.train_mode(model)
    gen, guard = meta_generator()
    with guard:
        optimizer.zero_grad(set_to_none=True)
        loss, right = T.accumulate_gradients(model, rec, images, labels, gen, micro_batch=N)
        optimizer.step()
    assert loss.device == META and right.shape == (2 * N,)
