"""The weight-sharing teacher: extracted students are the trained ones, gradients reach the shared
weights, channel rankings are fixed, training lowers the loss, and the reward modes and the search
use it (kill -9 then resume does not retrain it; same seed, same history)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys

import pytest
import torch
from _tiny import kill_when, tiny

from n2n_fx import trace
from n2n_fx.cli import main
from n2n_fx.data import load_splits
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.distill.loss import kd_kl_loss
from n2n_fx.errors import CheckpointError, ConfigError
from n2n_fx.features import RATIOS
from n2n_fx.graph.layers import analyze
from n2n_fx.reward import RewardCache, RewardEvaluator
from n2n_fx.reward.reachable import narrowest_cost
from n2n_fx.rewrite import apply_actions, apply_plan
from n2n_fx.rewrite.sample import random_actions
from n2n_fx.search import SearchConfig, run_compress
from n2n_fx.supernet import (
    Supernet,
    SupernetConfig,
    SupernetError,
    sample_actions,
    sandwich,
    smallest_actions,
    train_supernet,
)
from n2n_fx.teacher.zoo import build_model

ZOO = [
    ("conv4", (1, 28, 28)),
    ("vgg_tiny", (1, 16, 16)),
    ("resnet18", (3, 32, 32)),
    ("mobilenet_v2", (3, 32, 32)),
    ("densenet121", (3, 32, 32)),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("N2N_FX_CACHE", str(tmp_path_factory.getbasetemp() / "n2n_cache"))


def _net(name: str, size: tuple[int, ...]) -> Supernet:
    torch.manual_seed(0)
    gm = trace(build_model(name, num_classes=10, in_channels=size[0]), input_size=size)
    net = Supernet(gm)
    with torch.no_grad():  # shared weights that differ from the teacher's
        net.flat.add_(torch.randn_like(net.flat) * 0.05)
    return net


def _random_composite(net: Supernet, rng: random.Random) -> dict:
    remove, _ = random_actions(net.analysis, rng, p_remove=0.3, p_shrink=0.0)
    if not net.arch({"remove": remove}).valid:
        return {"remove": remove}
    _, shrink = random_actions(net.stage1_analysis(remove), rng, p_remove=0.0, p_shrink=0.6)
    return {"remove": remove, "shrink": shrink}


@pytest.mark.zoo
@pytest.mark.parametrize("name,size", ZOO, ids=[z[0] for z in ZOO])
def test_extracted_student_is_the_trained_student(name, size):
    """Training-time forward (gather of the shared weights) == extracted student == the surgery
    replayed on the shared weights directly, on random remove-then-shrink students."""
    net = _net(name, size)
    shared = net.shared_teacher()
    shared_analysis = analyze(shared)
    rng = random.Random(1)
    x = torch.randn(2, *size)
    checked = 0
    for _ in range(4):
        acts = _random_composite(net, rng)
        arch = net.arch(acts)
        assert arch.valid, f"{name}: a random legal student came out degenerate: {arch.rewrite.degenerate}"
        arch.template.eval()
        with torch.no_grad():
            trained = net.forward_student(arch, x)
            extracted = net.extract(arch).eval()(x)
            stage1 = apply_plan(shared_analysis, (arch.removal or arch.rewrite).plan)
            direct = stage1 if arch.removal is None else apply_plan(analyze(stage1.student), arch.rewrite.plan)
            surgery = direct.student.eval()(x)
        assert trained.shape == (2, 10)
        torch.testing.assert_close(extracted, trained, rtol=0, atol=0)
        torch.testing.assert_close(surgery, trained, rtol=1e-5, atol=1e-5)
        checked += 1
    assert checked == 4


def test_full_student_with_teacher_weights_is_the_teacher():
    net = Supernet(trace("conv4", input_size=(1, 28, 28)))
    x = torch.randn(3, 1, 28, 28)
    full = net.arch({"remove": []})
    with torch.no_grad():
        assert torch.equal(net.extract(full).eval()(x), net.teacher(x))


def test_gradients_reach_exactly_the_gathered_shared_weights():
    net = _net("conv4", (1, 28, 28))
    rng = random.Random(0)
    arch = net.arch(_random_composite(net, rng))
    arch.template.train()
    net.forward_student(arch, torch.randn(4, 1, 28, 28)).pow(2).sum().backward()
    used = torch.zeros(net.flat.numel() + 2, dtype=torch.bool)
    for idx in arch.codes.values():
        used[idx.flatten()] = True
    touched = net.flat.grad != 0
    assert touched.any()
    assert not (touched & ~used[2:]).any(), "a shared weight the student does not use got a gradient"


def test_caches_hold_at_most_their_budget_of_weights_and_rebuild_evicted_students_alike():
    full = _net("conv4", (1, 28, 28))
    budget = sum(p.numel() for p in full.teacher.parameters()) * 3 // 2  # about one student of each kind
    net = Supernet(full.teacher, cache_elements=budget)
    net.load_flat(full.flat.detach())
    rng = random.Random(0)
    drawn = [_random_composite(full, rng) for _ in range(12)]
    first = {json.dumps(d): full.arch(d) for d in drawn}  # never evicted: the reference
    for d in drawn:
        net.arch(d)
        held = [
            sum(p.numel() for p in entry[0].student.parameters()) if entry[0].valid else 0
            for entry in net._stage1.values()
        ]
        assert sum(held) <= budget or len(held) == 1
        assert sum(a.size for a in net._cache.values()) <= budget or len(net._cache) == 1
    assert len(net._stage1) < len({tuple(sorted(d["remove"])) for d in drawn}), "nothing was evicted"
    x = torch.randn(2, 1, 28, 28)
    for d in drawn:  # evicted and built again: the same student, the same weights
        again, want = net.arch(d), first[json.dumps(d)]
        assert again.valid == want.valid
        if want.valid:
            assert again.codes.keys() == want.codes.keys()
            assert all(torch.equal(again.codes[k], want.codes[k]) for k in want.codes)
            with torch.no_grad():
                assert torch.equal(net.extract(again).eval()(x), full.extract(want).eval()(x))


def test_channel_ranking_fixed_narrower_is_subset_of_wider():
    net = _net("conv4", (1, 28, 28))
    rows = {}
    for r in (0.25, 0.5, 0.75):
        arch = net.arch({"remove": [], "shrink": {"features_3": {"out": r}}})
        codes = arch.codes["features.3.weight"]  # (C_out', C_in, 3, 3)
        rows[r] = {int(c) for c in codes[:, 0, 0, 0]}
    assert rows[0.25] < rows[0.5] < rows[0.75]
    # the ranking is the teacher's L1 ranking, not the (perturbed) shared weights'
    want = apply_actions(net.teacher, shrink={"features_3": 0.5}).plan.kept
    got = net.arch({"remove": [], "shrink": {"features_3": {"out": 0.5}}}).rewrite.plan.kept
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_smallest_actions_shrink_everything_to_the_minimum():
    net = Supernet(trace("conv4", input_size=(1, 28, 28)))
    acts = smallest_actions(net.analysis, RATIOS)
    arch = net.arch(acts)
    assert arch.valid and not acts["remove"]
    assert arch.rewrite.student_cost.params < net.arch({"remove": []}).rewrite.student_cost.params / 4


@pytest.fixture(scope="module")
def tiny_data():
    splits = load_splits("synthetic", seed=0, num_samples=240, image_size=16)
    torch.manual_seed(0)
    model = build_model("vgg_tiny", in_channels=1)
    with torch.no_grad():  # an untrained teacher with confident, input-dependent logits: a real KD target
        [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].weight.mul_(30)
    teacher = trace(model, input_size=splits.input_size)
    return splits, teacher, LogitCache.build(teacher, splits.train_plain)


def test_supernet_training_lowers_the_students_loss(tiny_data):
    """After training, students drawn apart from training (other seeds) match the teacher better."""
    splits, teacher, cache = tiny_data
    net = Supernet(teacher)
    archs = [net.arch(sample_actions(net, random.Random(100 + k), 0.6)) for k in range(6)]
    archs = [a for a in archs if a.valid]
    x = torch.stack([splits.train_plain[i][0] for i in range(64)])  # (64, 1, 16, 16)
    z = cache.logits[:64]  # (64, 10)

    def loss() -> float:
        total = 0.0
        with torch.no_grad():
            for a in archs:
                a.template.train()  # batch statistics, as in training
                total += float(kd_kl_loss(net.forward_student(a, x), z, 2.0))
        return total

    before, flat = loss(), net.flat.detach().clone()
    res = train_supernet(net, splits.train_plain, cache, SupernetConfig(steps=24, batch_size=32, seed=0), log_every=6)
    assert res.steps == 24 and res.students == 24 * 4 and len(res.losses) == 4
    assert len(archs) >= 4 and loss() < before
    assert not torch.equal(flat, net.flat.detach())
    assert torch.equal(net.teacher_flat(), flat)  # the teacher itself is never trained


class _Killed(Exception):
    """Stands for a kill in the middle of a supernet training."""


@pytest.mark.parametrize("kill_at", [2, 7, 13])
def test_supernet_training_resumed_from_its_checkpoint_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_data, tmp_path, kill_at
):
    """Killed at a step (mid-epoch and on either side of an epoch's end), then started again from
    its checkpoint: the same weights, losses and counts as one training without interruption."""
    splits, teacher, cache = tiny_data
    cfg = SupernetConfig(steps=20, batch_size=32, seed=0)
    whole = Supernet(teacher)
    want = train_supernet(whole, splits.train_plain, cache, cfg, log_every=3)
    assert want.steps > 2 * math.ceil(len(splits.train_plain) / 32)  # the training crosses epochs

    def kill(step: int, loss: float) -> None:
        if step == kill_at:
            raise _Killed

    ckpt = tmp_path / "progress.pt"
    with pytest.raises(_Killed):  # saved after every step: the last save is the step before the kill
        train_supernet(
            Supernet(teacher),
            splits.train_plain,
            cache,
            cfg,
            log_every=3,
            on_step=kill,
            checkpoint=ckpt,
            checkpoint_every=0,
        )
    net, ran = Supernet(teacher), []
    got = train_supernet(
        net, splits.train_plain, cache, cfg, log_every=3, on_step=lambda k, _: ran.append(k), checkpoint=ckpt
    )
    assert ran == list(range(kill_at, cfg.steps + 1))  # the killed step again, then the rest
    assert torch.equal(net.flat, whole.flat)
    assert (got.steps, got.losses, got.students, got.archs) == (want.steps, want.losses, want.students, want.archs)
    # the finished checkpoint: called again, nothing is trained and the weights are the same
    again = Supernet(teacher)
    done = train_supernet(
        again, splits.train_plain, cache, cfg, on_step=lambda *_: pytest.fail("trained"), checkpoint=ckpt
    )
    assert torch.equal(again.flat, whole.flat) and done.steps == cfg.steps


def test_supernet_checkpoint_of_another_training_is_refused_in_one_line(tiny_data, tmp_path):
    splits, teacher, cache = tiny_data
    ckpt = tmp_path / "progress.pt"
    train_supernet(Supernet(teacher), splits.train_plain, cache, SupernetConfig(steps=2, seed=0), checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="another supernet training .config differ") as e:
        train_supernet(Supernet(teacher), splits.train_plain, cache, SupernetConfig(steps=2, seed=1), checkpoint=ckpt)
    assert "\n" not in str(e.value)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        train_supernet(Supernet(teacher), splits.train_plain, cache, SupernetConfig(steps=2, seed=0), checkpoint=ckpt)


def test_sample_actions_are_legal_and_seeded():
    net = Supernet(trace("vgg_tiny", input_size=(1, 16, 16)))
    a = [sample_actions(net, random.Random(3), 0.6) for _ in range(2)]
    assert a[0] == a[1]
    legal = {lay.node for lay in net.analysis.layers if lay.removable}
    assert set(a[0]["remove"]) <= legal


def test_random_students_leave_passive_layers_unless_asked():
    """The removal supernet trains the students the removal policy can draw: no passive layer is
    removed unless ``passive``; with it, some are."""
    net = Supernet(trace("vgg_tiny", input_size=(1, 16, 16)))
    passive = {lay.node for lay in net.analysis.layers if lay.kind.passive}
    rng = random.Random(1)
    default = [set(sample_actions(net, rng, 0.6, "removal")["remove"]) for _ in range(20)]
    assert passive and all(not (a & passive) for a in default) and any(default)
    asked = [set(sample_actions(net, rng, 0.6, "removal", passive=True)["remove"]) for _ in range(20)]
    assert any(a & passive for a in asked)


def test_each_space_draws_the_students_its_stage_searches():
    net = Supernet(trace("vgg_tiny", input_size=(1, 16, 16)))
    rng = random.Random(0)
    removal = [sample_actions(net, rng, 0.6, "removal") for _ in range(8)]
    assert all(set(a) == {"remove"} for a in removal) and any(a["remove"] for a in removal)
    base = next(a["remove"] for a in removal if a["remove"] and net.arch(a).valid)
    shrink = [sample_actions(net, rng, 0.6, "shrink", base) for _ in range(8)]
    assert all(a["remove"] == sorted(base) for a in shrink)
    stage1 = {lay.node for lay in net.stage1_analysis(base).layers}
    assert all(set(a["shrink"]) <= stage1 for a in shrink) and any(a["shrink"] for a in shrink)
    assert sandwich(net, "removal") == [{"remove": []}]
    widest, narrowest = sandwich(net, "shrink", base)
    assert widest == {"remove": sorted(base)} and narrowest["remove"] == sorted(base) and narrowest["shrink"]
    assert net.arch(narrowest).rewrite.student_cost.params < net.arch(widest).rewrite.student_cost.params


def test_shrink_space_trains_on_from_given_weights_and_refuses_a_degenerate_base(tiny_data):
    splits, teacher, cache = tiny_data
    net = Supernet(teacher)
    res = train_supernet(net, splits.train_plain, cache, SupernetConfig(steps=4, batch_size=32), space="removal")
    after_removal = net.flat.detach().clone()
    base = [lay.node for lay in net.analysis.layers if lay.removable][:1]
    train_supernet(net, splits.train_plain, cache, SupernetConfig(steps=4, batch_size=32), space="shrink", remove=base)
    assert res.students == 16 and not torch.equal(after_removal, net.flat.detach())
    every = [lay.node for lay in net.analysis.layers if lay.removable]
    with pytest.raises(SupernetError, match="degenerate"):
        train_supernet(net, splits.train_plain, cache, SupernetConfig(steps=1), space="shrink", remove=every)
    with pytest.raises(ConfigError, match="space"):
        train_supernet(net, splits.train_plain, cache, SupernetConfig(steps=1), space="widths")


def test_random_students_above_the_flops_cap_are_not_trained(tiny_data, monkeypatch):
    """The search refuses students over max_flops_ratio x the teacher's FLOPs (vgg_tiny: removed pools
    multiply them), so the supernet never spends steps on one; without a cap it does."""
    splits, teacher, cache = tiny_data
    net = Supernet(teacher)
    t_flops = net.arch({"remove": []}).rewrite.teacher_cost.flops
    seen: list[int] = []
    forward = Supernet.forward_student
    monkeypatch.setattr(
        Supernet, "forward_student", lambda self, a, x: seen.append(a.rewrite.student_cost.flops) or forward(self, a, x)
    )
    cfg = SupernetConfig(steps=12, batch_size=32, seed=0, max_remove=0.6, arch_reuse=1)
    train_supernet(net, splits.train_plain, cache, cfg, space="removal")
    assert max(seen) > t_flops  # the uncapped draws include heavier students (the test's premise)
    seen.clear()
    train_supernet(net, splits.train_plain, cache, dataclasses.replace(cfg, max_flops_ratio=1.0), space="removal")
    assert len(seen) == 12 * 4 and max(seen) <= t_flops
    with pytest.raises(ConfigError, match="max_flops_ratio"):
        SupernetConfig(max_flops_ratio=0.0)
    with pytest.raises(SupernetError, match="within 1e-06x the teacher's FLOPs"):  # nothing fits: one line
        train_supernet(net, splits.train_plain, cache, dataclasses.replace(cfg, max_flops_ratio=1e-6), space="removal")


def test_shared_rewards_of_one_architecture_are_cached_per_supernet(tiny_data):
    """Stage 2 scores with other shared weights than stage 1: a student of the same architecture
    is scored again, not served stage 1's reward."""
    splits, teacher, cache = tiny_data
    net = Supernet(teacher)
    arch = net.arch({"remove": []})
    shared = RewardCache()
    ev1 = _evaluator(splits, teacher, cache, "shared", cache_obj=shared)
    assert not ev1(net.extract(arch)).cache_hit and ev1(net.extract(arch)).cache_hit
    ev2 = _evaluator(splits, teacher, cache, "shared", cache_obj=shared, tag="t1")
    assert not ev2(net.extract(arch)).cache_hit
    assert ev1.key(arch.template) != ev2.key(arch.template)


def _evaluator(splits, teacher, cache, mode, steps=3, cache_obj=None, tag="t0"):
    return RewardEvaluator(
        splits.train_plain,
        splits.val,
        teacher_accuracy=0.5,
        teacher_params=10_000,
        input_size=splits.input_size,
        config=DistillConfig(steps=steps, batch_size=32),
        logit_cache=cache,
        mode=mode,
        calib_batches=2,
        supernet_tag=None if mode == "kd" else tag,
        cache=cache_obj,
    )


def test_reward_modes(tiny_data):
    splits, teacher, cache = tiny_data
    net = Supernet(teacher)
    arch = net.arch({"remove": [], "shrink": {"features_0": 0.5}})
    weights = {}
    records = {}
    for mode in ("kd", "shared", "shared+kd"):
        student = net.extract(arch)
        ev = _evaluator(splits, teacher, cache, mode)
        records[mode] = ev(student)
        weights[mode] = {k: v.clone() for k, v in student.named_parameters()}
        assert records[mode].accuracy is not None and 0 <= records[mode].accuracy <= 1
        assert ev.context()["mode"] == mode
    shared = net.weights(arch)
    for k, v in weights["shared"].items():  # shared: no gradient step
        assert torch.equal(v, shared[k].detach())
    assert any(not torch.equal(v, shared[k].detach()) for k, v in weights["shared+kd"].items())
    assert records["shared"].extra == {} and records["kd"].extra["steps"] == 3
    with pytest.raises(ConfigError, match="supernet"):  # shared rewards name the supernet they come from
        RewardEvaluator(
            splits.train_plain,
            splits.val,
            teacher_accuracy=0.5,
            teacher_params=1,
            input_size=(1, 16, 16),
            mode="shared",
        )


SHARED = tiny(reward_mode="shared", calib_batches=2)


def _rows(d):
    return [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]


def _key(rows):
    return [(r["stage"], r["iteration"], r["rollout"], r["actions"], r["params"], r["accuracy"]) for r in rows]


def test_shared_search_same_seed_same_history(tmp_path):
    a = run_compress(SearchConfig(**SHARED), tmp_path / "a", quiet=True)
    b = run_compress(SearchConfig(**SHARED), tmp_path / "b", quiet=True)
    assert _key(_rows(tmp_path / "a")) == _key(_rows(tmp_path / "b"))
    assert (tmp_path / "a" / "supernet.pt").is_file() and (tmp_path / "a" / "supernet_shrink.pt").is_file()
    assert a.summary["winner"] == b.summary["winner"]
    assert a.summary[a.summary["winner"]]["params"] == b.summary[b.summary["winner"]]["params"]
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["reward_mode"] == "shared"
    timing = json.loads((tmp_path / "a" / "timing.json").read_text())
    record = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["supernet"]
    assert set(record) == {"removal", "shrink"} and record["shrink"]["steps"] == SHARED["supernet_shrink_steps"]
    assert timing["supernet_s"] == pytest.approx(record["removal"]["wall_s"] + record["shrink"]["wall_s"])


@pytest.mark.parametrize("mode", ["shared", "kd"])
def test_stage2_also_shrinks_the_teacher_and_keeps_the_better_student(tmp_path, mode):
    """shrink_teacher: a second shrink stage on the teacher's full depth, its own policy and shared
    weights; the stage-2 student is the best-rewarded of both shrink stages."""
    cfg = SearchConfig(**{**SHARED, "reward_mode": mode, "shrink_teacher": True, "final_students": "both"})
    res = run_compress(cfg, tmp_path / "r", quiet=True)
    rows = _rows(tmp_path / "r")
    removal = {n for r in rows if r["stage"] == "removal" for n in r["actions"]}
    teacher_rows = [r for r in rows if r["stage"] == "shrink_teacher"]
    assert len(teacher_rows) == cfg.shrink_iterations * cfg.rollouts
    assert [r["step"] for r in teacher_rows][0] == cfg.removal_iterations + cfg.shrink_iterations
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["best"]["removal"]["actions"]["remove"], "the tiny run's stage-1 winner removes something"
    assert (tmp_path / "r" / "policies" / "shrink_teacher.pt").is_file()
    if mode == "shared":
        assert set(ck["supernet"]) == {"removal", "shrink", "shrink_teacher"}
        assert ck["supernet"]["shrink_teacher"]["remove"] == []
    # the teacher's shrinks name layers stage 1's winner had removed: it is the full depth
    assert removal & {n for r in teacher_rows for n in r["actions"]}
    ok = [r for r in rows if r["stage"] != "removal" and not r["degenerate"] and not r["violations"]]
    best = max(ok, key=lambda r: r["reward"])
    assert res.summary["stage2"]["params"] == best["params"]
    stage2 = torch.load(tmp_path / "r" / "student_stage2.pt", weights_only=False)
    assert (stage2["actions"]["remove"] == []) == (best["stage"] == "shrink_teacher")


@pytest.mark.parametrize("kernels", [True, False])
def test_channels_only_shrink_space_never_cuts_a_kernel(tmp_path, monkeypatch, kernels):
    """shrink_kernels=False: no kernel is a shrink variable of the policy, of the supernet's students
    (random and narrowest) or of stage 1's narrowest-shrink floor (the default); with it, kernels are."""
    drawn = []
    real = sample_actions

    def spy(*args, **kw):
        drawn.append(real(*args, **kw))
        return drawn[-1]

    monkeypatch.setattr("n2n_fx.supernet.train.sample_actions", spy)
    cfg = SearchConfig(**{**SHARED, "shrink_kernels": kernels, "shrink_iterations": 3, "rollouts": 3})
    run_compress(cfg, tmp_path / "r", quiet=True)
    net = Supernet(trace("vgg_tiny", input_size=(1, 16, 16)))
    sources = {
        "policy": [r["actions"] for r in _rows(tmp_path / "r") if r["stage"] == "shrink"],
        "random students": [a["shrink"] for a in drawn if a.get("shrink")],
        "narrowest student": [sandwich(net, "shrink", kernels=kernels)[1]["shrink"]],
    }
    for source, shrinks in sources.items():
        cut = {var for s in shrinks for per in s.values() for var in per}
        assert "out" in cut and ("kernel" in cut) == kernels, source
    floor = narrowest_cost(net.analysis.gm, (1, 16, 16), kernels=kernels)["params"]
    assert (floor < narrowest_cost(net.analysis.gm, (1, 16, 16), kernels=not kernels)["params"]) == kernels


def test_shrink_teacher_is_skipped_when_stage1_removed_nothing(tmp_path):
    cfg = SearchConfig(**{**SHARED, "stage": "shrink", "removal_iterations": 0, "shrink_teacher": True})
    run_compress(cfg, tmp_path / "r", quiet=True)
    assert {r["stage"] for r in _rows(tmp_path / "r")} == {"shrink"}


def test_shared_search_killed_while_training_its_supernet_goes_on_from_the_last_save(tmp_path):
    """Killed in the middle of the stage-1 supernet (before the run's first checkpoint): the resumed run
    goes on from the training's last save, and ends exactly where an uninterrupted run does."""
    run_dir = tmp_path / "killed"
    cfg = {**SHARED, "removal_iterations": 2, "shrink_iterations": 2, "supernet_steps": 30}
    cfg["supernet_checkpoint_s"] = 0  # saved after every step
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = [sys.executable, "-m", "n2n_fx", "compress", "--run-dir", str(run_dir), "--quiet"]
    args += ["--config", str(tmp_path / "cfg.json")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # as this process: the same sums
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    progress = run_dir / "supernet.progress.pt"
    kill_when(proc, progress.is_file, "a save of the supernet's progress", 300)
    assert not (run_dir / "supernet.pt").exists()
    assert main(["compress", "--resume", str(run_dir), "--quiet"]) == 0
    assert "supernet: going on from step" in (run_dir / "run.log").read_text()
    assert not progress.exists()  # the trained weights are saved: the progress file is gone
    whole = tmp_path / "whole"
    run_compress(SearchConfig(**cfg), whole, quiet=True)
    a, b = (torch.load(d / "supernet.pt")["flat"] for d in (run_dir, whole))
    assert torch.equal(a, b)
    assert _key(_rows(run_dir)) == _key(_rows(whole))


@pytest.mark.parametrize("stage", ["removal", "shrink", "shrink_teacher"])
def test_shared_search_resume_after_kill_does_not_retrain_supernet(tmp_path, stage):
    """Killed in stage 1 (its supernet saved) or stage 2 (both saved): the resumed run loads them."""
    run_dir = tmp_path / "killed"
    cfg = {**SHARED, "removal_iterations": 4, "shrink_iterations": 3, "supernet_steps": 8}
    if stage == "shrink_teacher":
        cfg["shrink_teacher"] = True
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = [sys.executable, "-m", "n2n_fx", "compress", "--run-dir", str(run_dir), "--quiet"]
    args += ["--config", str(tmp_path / "cfg.json")]
    proc = subprocess.Popen(args, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL)
    hist = run_dir / "history.jsonl"
    kill_when(proc, lambda: hist.is_file() and f'"stage": "{stage}"' in hist.read_text(), f"its {stage} stage", 300)
    saved = [run_dir / "supernet.pt"] + ([run_dir / "supernet_shrink.pt"] if stage != "removal" else [])
    saved += [run_dir / "supernet_shrink_teacher.pt"] if stage == "shrink_teacher" else []
    assert all(sn.is_file() for sn in saved)
    stamps = [(sn.stat().st_mtime_ns, sn.read_bytes()) for sn in saved]
    assert main(["compress", "--resume", str(run_dir), "--quiet"]) == 0
    assert [(sn.stat().st_mtime_ns, sn.read_bytes()) for sn in saved] == stamps, "a supernet was trained again"
    keys = [(r["stage"], r["iteration"], r["rollout"]) for r in _rows(run_dir)]
    assert len(keys) == len(set(keys))
    # the resumed run ends exactly where an uninterrupted one does
    whole = tmp_path / "whole"
    run_compress(SearchConfig(**cfg), whole, quiet=True)
    assert _key(_rows(run_dir)) == _key(_rows(whole))
