"""Final training: the search's best students trained to convergence with CE + λ·KD, saved with
their code and diff; and rebuilding a student from the teacher and its recorded actions."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import torch
from torch import fx

from ..distill import DistillConfig, accuracy, distill
from ..distill.calibrate import recalibrate_bn
from ..errors import CheckpointError, RunDirError
from ..graph.cost import model_cost
from ..progress import progress_bar
from ..report.report import gap_words
from ..rewrite import apply_actions
from ..storage import atomic_torch_save, atomic_write_bytes, atomic_write_text
from .config import SearchConfig
from .state import FINAL_NAMES
from .tolerance import next_candidate, pick, ranked_candidates, within

__all__ = ["FinalTraining", "final_distill_config", "rebuild_student"]

logger = logging.getLogger(__name__)


def rebuild_student(
    teacher: fx.GraphModule,
    actions: dict[str, Any],
    state_dict: dict | None = None,
    max_linear_growth: float = 8.0,
):
    """Re-create a student from the teacher and its actions; load its weights if given.

    Returns the ``Rewrite`` of the last stage applied (``.student`` holds the model)."""
    r = apply_actions(teacher, remove=actions.get("remove", ()), strict=False, max_linear_growth=max_linear_growth)
    if actions.get("shrink") and r.valid:
        r2 = apply_actions(r.student, shrink=actions["shrink"], strict=False, max_linear_growth=max_linear_growth)
        r2.diff = r.diff.then(r2.diff)
        r2.teacher_cost = r.teacher_cost
        r = r2
    if not r.valid:
        raise CheckpointError(f"the saved actions no longer give a valid student ({r.degenerate})")
    if state_dict is not None:
        try:
            r.student.load_state_dict(state_dict)
        except RuntimeError as e:
            raise CheckpointError(
                f"saved student weights do not fit its architecture: {str(e).splitlines()[0]}"
            ) from None
    return r


def final_distill_config(cfg: SearchConfig, device: str) -> DistillConfig:
    """How the run's best students are trained at the end (CE + λ·KD); baselines reuse it."""
    return DistillConfig(
        keep_best=True,  # the best validation epoch, the search's own weights counting as epoch 0
        loss=cfg.final_loss,
        schedule="cosine",
        lam=cfg.final_lambda,
        lr=cfg.final_lr,
        epochs=max(1, cfg.final_epochs),
        batch_size=cfg.batch_size,
        device=device,
        amp=cfg.amp,
        seed=cfg.seed,
    )


def _finite(state_dict: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


class FinalTraining:
    """``Search``'s last phase (a mixin: it reads the search's config, state, data and run directory)."""

    def _final(self) -> None:
        """Train the best students with CE + λ·KD; keep the best validation epoch; record test accuracy.

        The weights the search measured count as epoch 0, so the shipped student is never worse
        on validation than the search reported; the log says which epoch was kept. Under
        ``max_accuracy_drop`` the run's result walks back from the search's best to more accurate
        students it scored until one trains to within the tolerance (``tolerance``)."""
        cfg = self.cfg
        b1, b2 = self.state.best.get("removal"), self.state.best.get("shrink")
        if b1 is not None and b1.record.get("violations"):  # legal only through its narrowest shrink (reachable)
            if b2 is None:
                raise RunDirError(
                    f"no student within the constraints was found: stage 1's best ({b1.record.get('params'):,} params) "
                    f"breaks {', '.join(b1.record['violations'])} and stage 2 found no narrowing of it within them; "
                    "raise --shrink-iterations or loosen the limits"
                )
            b1 = None  # stage 2's result wins
        # the run's result is the best-rewarded student (stage 1 when stage 2 found nothing better)
        winner = "shrink" if b2 is not None and (b1 is None or b2.reward >= b1.reward) else "removal"
        for stage in ("removal", "shrink"):
            best = self.state.best.get(stage)
            if best is None or stage in self.state.final or (cfg.final_students == "winner" and stage != winner):
                continue
            name = f"student_{FINAL_NAMES[stage]}"
            if stage == winner and cfg.max_accuracy_drop is not None:
                self.state.final[stage] = self._final_within_tolerance(stage, best, name)
            else:
                self.state.final[stage] = self._train_final(stage, best.actions, best.state_dict, name, best.record)
            self.save_checkpoint()
        self.state.final["winner"] = winner
        _copy_files(self.run_dir, f"student_{FINAL_NAMES[winner]}", "student")

    def _final_within_tolerance(self, stage: str, best, name: str) -> dict[str, Any]:
        """The run's result under ``max_accuracy_drop``: the search's best trained first; while the last
        one trained is more than the tolerance below the teacher on validation, the next of
        ``tolerance.next_candidate`` (at most ``final_candidates`` in all). Each try is checkpointed
        (``state.final["tries"]``), so a resumed run trains none twice."""
        cfg = self.cfg
        teacher_val = self.state.teacher["val_accuracy"]
        tries = self.state.final.setdefault("tries", [])
        ranked = None
        while len(tries) < cfg.final_candidates and not any(
            within(teacher_val, t["val_accuracy"], cfg.max_accuracy_drop) for t in tries
        ):
            if not tries:
                cand = {"stage": stage, "actions": best.actions, "reward": best.reward, **best.record}
                start = best.state_dict
            else:
                ranked = self._candidates(stage) if ranked is None else ranked
                cand = next_candidate(ranked, tries)
                if cand is None:
                    break
                start = self._start_weights(cand["stage"], cand["actions"])
                logger.info(
                    f"final: {gap_words(teacher_val, tries[-1]['val_accuracy'])} the teacher on validation "
                    f"is over max_accuracy_drop {cfg.max_accuracy_drop}; next: the {cand['params']:,}-parameter student "
                    f"the search read at {cand['accuracy']:.4f} (reward {cand['reward']:.3f})"
                )
            entry = self._train_final(stage, cand["actions"], start, f"{name}_try{len(tries)}", cand)
            tries.append(
                {
                    **entry,
                    "stage": cand["stage"],
                    "actions": cand["actions"],
                    "accuracy": cand["accuracy"],
                    "reward": cand["reward"],
                }
            )
            self.save_checkpoint()
        k = pick(tries, teacher_val, cfg.max_accuracy_drop)
        chosen = tries[k]
        ok = within(teacher_val, chosen["val_accuracy"], cfg.max_accuracy_drop)
        (logger.info if ok else logger.warning)(
            f"final: shipping try {k + 1} of {len(tries)} ({chosen['params']:,} params, {gap_words(teacher_val, chosen['val_accuracy'])} "
            f"the teacher on validation"
            + ("" if ok else f"; none of the students tried is within max_accuracy_drop {cfg.max_accuracy_drop}")
            + ")"
        )
        alone = len(tries) == 1  # the search's best was within the tolerance: its files keep the usual name
        _copy_files(self.run_dir, chosen["file"][: -len(".pt")], name, move=alone)
        if alone:
            tries[0]["file"] = f"{name}.pt"
        entry = {k2: v for k2, v in chosen.items() if k2 not in ("stage", "actions", "accuracy", "reward")}
        entry.update(file=f"{name}.pt", try_index=k, within_tolerance=ok, tries=[_try_summary(t) for t in tries])
        self.state.final.pop("tries")
        return entry

    def shipped_start(self) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
        """The run's result as its final training started: its actions and weights (benchmarks train it
        again on other seeds). Needs a finished final phase in ``state``."""
        winner = self.state.final["winner"]
        best = self.state.best[winner]
        tries = self.state.final[winner].get("tries")
        if not tries or self.state.final[winner].get("try_index", 0) == 0:
            return best.actions, best.state_dict
        shipped = tries[self.state.final[winner]["try_index"]]
        return shipped["actions"], self._start_weights(shipped["stage"], shipped["actions"])

    def _candidates(self, stage: str) -> list[dict[str, Any]]:
        """Every valid, legal student the stages of ``stage``'s best scored, best reward first."""
        if stage == "removal":
            bases = {"removal": {}}
        else:
            bases = {"shrink": {"remove": self._stage1_removal()}, "shrink_teacher": {"remove": []}}
        return ranked_candidates(self.run_dir.history(), bases)

    def _start_weights(self, stage: str, actions: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The weights a runner-up starts its final training from: as the search read it in the shared
        modes (the stage's shared weights, batch norms recalibrated); the teacher's in ``kd`` mode."""
        cfg = self.cfg
        if cfg.reward_mode == "kd":
            return rebuild_student(self.teacher, actions, None, cfg.max_linear_growth).student.state_dict()
        net = self._saved_supernet(stage)
        student = net.extract(net.arch(actions)).to(self.device)
        recalibrate_bn(
            student, self._reward_train(), batches=cfg.calib_batches, batch_size=cfg.batch_size, seed=cfg.seed
        )
        return {k: v.detach().cpu() for k, v in student.state_dict().items()}

    def _train_final(
        self, stage: str, actions: dict[str, Any], state_dict: dict | None, name: str, record: dict[str, Any]
    ) -> dict[str, Any]:
        """Train one student to convergence and save it as ``name`` (.pt, .py, _diff.txt, _diff.json)."""
        cfg = self.cfg
        dcfg = final_distill_config(cfg, self.device)
        r = rebuild_student(self.teacher, actions, state_dict, cfg.max_linear_growth)
        student = r.student
        searched = {k: v.detach().clone() for k, v in student.state_dict().items()}  # the fallback
        torch.manual_seed(cfg.seed)
        logger.info(
            f"final training of the best {stage} student ({model_cost(student).params:,} params, {dcfg.epochs} epochs)"
        )
        ebar = progress_bar(dcfg.epochs, f"final training ({stage})")
        res = distill(
            student,
            self.splits.train,
            dcfg,
            teacher=self.device_teacher(),
            val_data=self.splits.val,
            on_epoch=lambda *_, b=ebar: b.update(1),
        )
        ebar.close()
        fallback = None
        if res.degenerate or not _finite(student.state_dict()):
            # never ship a broken student: keep the weights it had when the search scored it
            fallback = f"final training {res.degenerate or 'gave non-finite weights'}; kept the search-time weights"
            if not _finite(searched):
                raise CheckpointError(f"the best {stage} student's search-time weights are not finite either")
            student.load_state_dict(searched)
            logger.warning(f"final training of the best {stage} student: {fallback} (lower final_lr)")
        test_acc = accuracy(student, self.splits.test, device=self.device) if len(self.splits.test) else math.nan
        val_acc = accuracy(student, self.splits.val, device=self.device) if len(self.splits.val) else math.nan
        student.cpu().eval()  # saved and shipped from the CPU
        read = record.get("accuracy")
        logger.info(
            f"final {stage}: kept epoch {res.best_epoch} of {res.epochs} (val acc {val_acc:.4f}; "
            f"the search measured {read if read is not None else float('nan'):.4f})"
        )
        cost = model_cost(student)
        atomic_torch_save(
            {
                "format": "n2n_fx.student/1",
                "actions": actions,
                "state_dict": student.state_dict(),
                "params": cost.params,
                "flops": cost.flops,
            },
            self.run_dir.file(f"{name}.pt"),
        )
        atomic_write_text(self.run_dir.file(f"{name}.py"), student.code)
        atomic_write_text(self.run_dir.file(f"{name}_diff.txt"), r.diff.table() + "\n")
        self.run_dir.write_json(f"{name}_diff.json", json.loads(r.diff.to_json()))
        return {
            "test_accuracy": test_acc,
            "val_accuracy": val_acc,
            "params": cost.params,
            "flops": cost.flops,
            "diverged": None if res.degenerate is None else str(res.degenerate),
            "fallback": fallback,  # why the search-time weights were kept, or None
            "epochs": dcfg.epochs,
            "best_epoch": res.best_epoch,
            "search_val_accuracy": read,
            "layers_removed": len(actions.get("remove", ())),  # 0: narrowed only (the report's row label)
            "file": f"{name}.pt",
        }


def _copy_files(run, src: str, dst: str, move: bool = False) -> None:
    """Copy (``move``: rename) a saved student's files (.pt, .py, _diff.txt, _diff.json) from ``src`` to ``dst``."""
    for ext in (".pt", ".py", "_diff.txt", "_diff.json"):
        path = run.file(f"{src}{ext}")
        if not path.is_file():
            continue
        if move:
            path.replace(run.file(f"{dst}{ext}"))
        else:
            atomic_write_bytes(run.file(f"{dst}{ext}"), path.read_bytes())


def _try_summary(t: dict[str, Any]) -> dict[str, Any]:
    """What the report and summary.json keep of one tried student."""
    keys = ("stage", "actions", "params", "flops", "val_accuracy", "test_accuracy", "accuracy", "reward", "file")
    return {k: t.get(k) for k in keys}
