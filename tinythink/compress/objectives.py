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


class OnPolicy:
    """GKD's on-policy batches: for a `fraction` of the batches, each sequence is cut to the start of its first
    document and the student writes the rest (sampled, no gradient), which the objective then scores (the teacher,
    live, judging the student's own text). The others pass through unchanged."""

    def __init__(self, objective: Distill, fraction: float, new_tokens: int = 128, temperature: float = 1.0,
                 seed: int = 0):
        if objective.teacher is None:
            raise ValueError("on-policy batches need the live teacher (a cache holds only the data's own text)")
        if not 0 < fraction <= 1:
            raise ValueError(f"the on-policy fraction must lie in (0, 1], not {fraction}")
        self.objective, self.fraction, self.new_tokens, self.temperature = objective, fraction, new_tokens, temperature
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, forward: nn.Module, batch: Batch) -> tuple[Tensor, dict]:
        if batch.split != "train" or torch.rand((), generator=self.generator).item() >= self.fraction:
            return self.objective(forward, batch)
        model = getattr(forward, "module", forward).model  # through DDP's wrapper
        return self.objective(forward, self.sampled(model, batch))

    @torch.no_grad()
    def sampled(self, model: nn.Module, batch: Batch) -> Batch:
        from tinythink.compress.losses import IGNORE

        B, T = batch.tokens.shape
        first = (batch.documents == batch.documents[:, :1]).sum(1)  # each row's first document's length
        context = int(first.min().clamp(min=1, max=T - self.new_tokens))
        was_training = model.training
        model.eval()
        model.setup_caches(B, T)
        try:
            ids = batch.tokens[:, :context]
            logits = model(ids, input_pos=torch.arange(context), last_only=True)[:, -1]
            out = [ids]
            for t in range(context, T):
                probs = torch.softmax(logits.float() / self.temperature, dim=-1)
                token = torch.multinomial(probs, 1, generator=self.generator)
                out.append(token)
                if t + 1 < T:
                    logits = model(token, input_pos=torch.tensor([t]))[:, -1]
        finally:
            model.clear_caches()
            model.train(was_training)
        tokens = torch.cat(out, dim=1)
        labels = torch.full_like(tokens, IGNORE)
        labels[:, context - 1:T - 1] = tokens[:, context:]  # the student's own tokens are what gets scored
        return Batch(tokens, torch.zeros_like(tokens), labels, batch.index, batch.split)
