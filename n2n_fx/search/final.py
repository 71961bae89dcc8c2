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
from ..errors import CheckpointError
from ..graph.cost import model_cost
from ..progress import progress_bar
from ..rewrite import apply_actions
from ..storage import atomic_torch_save, atomic_write_bytes, atomic_write_text
from .config import SearchConfig
from .state import FINAL_NAMES

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
        on validation than the search reported; the log says which epoch was kept."""
        cfg = self.cfg
        dcfg = final_distill_config(cfg, self.device)
        b1, b2 = self.state.best.get("removal"), self.state.best.get("shrink")
        # the run's result is the best-rewarded student (stage 1 when stage 2 found nothing better)
        winner = "shrink" if b2 is not None and (b1 is None or b2.reward >= b1.reward) else "removal"
        for stage in ("removal", "shrink"):
            best = self.state.best.get(stage)
            if best is None or stage in self.state.final or (cfg.final_students == "winner" and stage != winner):
                continue
            r = rebuild_student(self.teacher, best.actions, best.state_dict, cfg.max_linear_growth)
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
            searched = best.record.get("accuracy")
            logger.info(
                f"final {stage}: kept epoch {res.best_epoch} of {res.epochs} (val acc {val_acc:.4f}; "
                f"the search measured {searched if searched is not None else float('nan'):.4f})"
            )
            cost = model_cost(student)
            name = f"student_{FINAL_NAMES[stage]}"
            atomic_torch_save(
                {
                    "format": "n2n_fx.student/1",
                    "actions": best.actions,
                    "state_dict": student.state_dict(),
                    "params": cost.params,
                    "flops": cost.flops,
                },
                self.run_dir.file(f"{name}.pt"),
            )
            atomic_write_text(self.run_dir.file(f"{name}.py"), student.code)
            atomic_write_text(self.run_dir.file(f"{name}_diff.txt"), r.diff.table() + "\n")
            self.run_dir.write_json(f"{name}_diff.json", json.loads(r.diff.to_json()))
            self.state.final[stage] = {
                "test_accuracy": test_acc,
                "val_accuracy": val_acc,
                "params": cost.params,
                "flops": cost.flops,
                "diverged": None if res.degenerate is None else str(res.degenerate),
                "fallback": fallback,  # why the search-time weights were kept, or None
                "epochs": dcfg.epochs,
                "best_epoch": res.best_epoch,
                "search_val_accuracy": searched,
                "file": f"{name}.pt",
            }
            self.save_checkpoint()
        self.state.final["winner"] = winner
        name = f"student_{FINAL_NAMES[winner]}"
        for ext in (".pt", ".py", "_diff.txt", "_diff.json"):
            src = self.run_dir.file(f"{name}{ext}")
            if src.is_file():
                atomic_write_bytes(self.run_dir.file(f"student{ext}"), src.read_bytes())
