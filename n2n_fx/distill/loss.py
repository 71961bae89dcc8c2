"""Knowledge-distillation losses: logit L2 (Ba & Caruana; paper §3.5), CE + λ·L2, and KL with temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["kd_l2_loss", "kd_kl_loss", "distill_loss", "LOSSES"]

# loss name -> what it computes (student logits s, teacher logits z, labels y)
LOSSES = {
    "l2": "(1/N) sum_i ||s_i - z_i||^2 (paper §3.5; reward-time training)",
    "ce+l2": "CE(s, y) + lambda * l2 (paper §3.5; final training with hard and soft labels)",
    "kl": "T^2 * KL(softmax(z/T) || softmax(s/T)) (Hinton et al.)",
    "ce+kl": "CE(s, y) + lambda * kl",
    "ce": "CE(s, y) only (no teacher)",
}


def kd_l2_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the squared L2 distance between logit vectors.

    ``(1/N) Σ_i ||f(x_i) − z_i||²``: summed over classes, averaged over the batch.

    Example:
        >>> kd_l2_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]]))
        tensor(5.)
    """
    diff = student_logits.float() - teacher_logits.float()  # (batch, n_classes)
    return diff.pow(2).sum(dim=1).mean()


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """``T² · KL(p_teacher^T || p_student^T)``, averaged over the batch (Hinton et al. 2015).

    Example:
        >>> kd_kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item()
        0.0
    """
    if temperature <= 0:
        raise ConfigError(f"temperature={temperature} must be positive")
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=1)  # (batch, n_classes)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=1)  # (batch, n_classes)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def distill_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    *,
    lam: float = 1.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """The training loss ``kind`` (see ``LOSSES``) for one batch.

    Example:
        >>> s, z, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0])
        >>> round(distill_loss("ce+l2", s, z, y, lam=0.5).item(), 4)  # CE 0.1269 + 0.5 * 1
        0.6269
    """
    if kind not in LOSSES:
        raise ConfigError(f"unknown distillation loss {kind!r}; use one of {sorted(LOSSES)}")
    needs_teacher = kind != "ce"
    if needs_teacher and teacher_logits is None:
        raise ConfigError(f"loss {kind!r} needs teacher logits; pass a teacher or a logit cache")
    if kind.startswith("ce") and labels is None:
        raise ConfigError(f"loss {kind!r} needs labels")
    soft = None
    if kind.endswith("l2"):
        soft = kd_l2_loss(student_logits, teacher_logits)  # type: ignore[arg-type]
    elif kind.endswith("kl"):
        soft = kd_kl_loss(student_logits, teacher_logits, temperature)  # type: ignore[arg-type]
    if not kind.startswith("ce"):
        assert soft is not None
        return soft
    hard = F.cross_entropy(student_logits.float(), labels)  # type: ignore[arg-type]
    return hard if soft is None else hard + lam * soft
