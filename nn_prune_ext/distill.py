"""Knowledge distillation from a teacher's logits."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from .validation import InputError

__all__ = ["LOGIT_NAMES", "distillation_loss"]

# Output fields compared with the teacher: classification / causal LM, and extractive QA.
LOGIT_NAMES = ("logits", "start_logits", "end_logits")


def _field(outputs: Any, name: str) -> torch.Tensor | None:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def distillation_loss(
    student_outputs: Any, teacher_outputs: Any, temperature: float, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Temperature-scaled KL divergence between teacher and student, averaged over logit fields.

    Args:
        student_outputs: The student's model output (with `logits`, or `start_logits`/`end_logits`).
        teacher_outputs: The teacher's output on the same inputs.
        temperature: Softmax temperature; the loss is multiplied by its square (Hinton et al.).
        attention_mask: For per-token logits (`(batch, seq, vocab)`), positions to average over.

    Returns:
        A scalar tensor.
    """
    losses = []
    for name in LOGIT_NAMES:
        student, teacher = _field(student_outputs, name), _field(teacher_outputs, name)
        if student is None or teacher is None:
            continue
        if student.shape != teacher.shape:
            raise InputError(f"Student and teacher {name} differ in shape: {tuple(student.shape)} vs {tuple(teacher.shape)}.")
        student = student.float().reshape(-1, student.shape[-1]) / temperature
        teacher = teacher.float().reshape(-1, teacher.shape[-1]) / temperature
        per_row = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), reduction="none", log_target=True).sum(-1)
        if attention_mask is not None and per_row.numel() == attention_mask.numel():
            weights = attention_mask.reshape(-1).to(per_row.dtype)
            losses.append((per_row * weights).sum() / weights.sum().clamp_min(1.0))
        else:
            losses.append(per_row.mean())
    if not losses:
        raise InputError(f"Distillation needs one of the output fields {LOGIT_NAMES} from both models.")
    return torch.stack(losses).mean() * temperature**2
