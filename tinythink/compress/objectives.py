"""What the trainer minimises on a batch: distillation from a live or cached teacher, or plain cross-entropy on
text (fine-tuning; sequence-level distillation on a teacher's generations)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tinythink.compress.data import Batch
from tinythink.compress.losses import CrossEntropy, Divergence, HiddenStateLoss
from tinythink.compress.teacher_cache import TeacherCache


class Distill:
    """The student's logits against the teacher's: live (the teacher under no_grad, in its own dtype) or, for the
    splits that have one, from a TeacherCache; optionally plus a hidden-state loss (live teacher only)."""

    def __init__(self, loss: Divergence, teacher: nn.Module | None = None, caches: dict[str, TeacherCache] | None = None,
                 hidden_loss: HiddenStateLoss | None = None, hidden_weight: float = 0.0):
        if teacher is None and not caches:
            raise ValueError("distillation needs a teacher or a teacher cache")
        if hidden_loss is not None and teacher is None:
            raise ValueError("a hidden-state loss needs the live teacher")
        self.loss, self.teacher, self.caches = loss, teacher, caches or {}
        self.hidden_loss, self.hidden_weight = hidden_loss, hidden_weight
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def __call__(self, forward: nn.Module, batch: Batch) -> tuple[Tensor, dict]:
        hidden, logits = forward(batch.tokens, batch.documents)
        teacher_hidden = None
        if batch.split in self.caches and self.hidden_loss is None:
            target = self.caches[batch.split].read(batch.index)
        else:
            with torch.no_grad():
                teacher_hidden = self.teacher.hidden(batch.tokens, batch.documents)
                target = self.teacher.logits(teacher_hidden)
        loss = self.loss(logits, target, batch.labels)
        metrics = {"kd": loss.item()}
        if self.hidden_loss is not None:
            extra = self.hidden_loss(hidden, teacher_hidden, batch.labels)
            metrics["hidden"] = extra.item()
            loss = loss + self.hidden_weight * extra
        return loss, metrics


class LanguageModeling:
    """Next-token cross-entropy on the batch's labels."""

    def __init__(self):
        self.loss = CrossEntropy()

    def __call__(self, forward: nn.Module, batch: Batch) -> tuple[Tensor, dict]:
        _, logits = forward(batch.tokens, batch.documents)
        loss = self.loss(logits, None, batch.labels)
        return loss, {"ce": loss.item()}
