"""Knowledge distillation: losses, a teacher-logit cache, a student trainer and accuracy."""

from .config import DistillConfig
from .evaluate import accuracy, accuracy_and_loss, model_device, predict_logits
from .logit_cache import IndexedDataset, LogitCache, dataset_fingerprint
from .loss import LOSSES, distill_loss, kd_kl_loss, kd_l2_loss
from .trainer import DistillResult, distill

__all__ = [
    "LOSSES",
    "DistillConfig",
    "DistillResult",
    "IndexedDataset",
    "LogitCache",
    "accuracy",
    "accuracy_and_loss",
    "dataset_fingerprint",
    "distill",
    "distill_loss",
    "kd_kl_loss",
    "kd_l2_loss",
    "model_device",
    "predict_logits",
]
