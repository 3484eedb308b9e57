"""Distillation losses, as small modules called `(student_logits, teacher, labels, mask)`, as torchtune's are.

The teacher is either dense logits over the same vocabulary, or a `TopK`: the k most likely tokens' log-probs
as cached on disk (compress/teacher_cache.py), the leftover probability mass standing as one extra bucket
(as Minitron/Model Optimizer's cached distillation does). Both become a pair of distributions over the same
buckets, the whole vocabulary or k + 1, on which every divergence is defined the same way.

Computed a chunk of tokens at a time, each chunk recomputed in the backward pass (activation checkpointing), so
a 150k-token vocabulary keeps only the student's logits alive, not several float32 copies of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # a label that the loss skips (prompt tokens, padding, a document's last token)
FLOOR = 1e-10  # the smallest leftover mass: keeps log(0) out of a bucket that a top-k nearly covers


@dataclass
class TopK:
    """A teacher's distribution as cached: the k most likely tokens (N, k) and their log-probabilities (N, k),
    at the temperature they were cached at."""
    indices: Tensor
    logprobs: Tensor

    def __getitem__(self, rows) -> TopK:
        return TopK(self.indices[rows], self.logprobs[rows])


def buckets(student_logits: Tensor, teacher: Tensor | TopK, temperature: float) -> tuple[Tensor, Tensor]:
    """(log p_student, log p_teacher), each (N, buckets), float32: over the vocabulary for dense teacher logits,
    over the teacher's top k plus the rest for a TopK."""
    s = student_logits.float() / temperature
    if isinstance(teacher, Tensor):
        return F.log_softmax(s, dim=-1), F.log_softmax(teacher.float() / temperature, dim=-1)
    idx = teacher.indices.long()
    log_s = F.log_softmax(s, dim=-1).gather(-1, idx)  # (N, k)
    log_t = teacher.logprobs.float()
    if idx.shape[-1] >= s.shape[-1]:  # the top k is the whole vocabulary: no rest
        return log_s, log_t
    rest_s = torch.log((1 - log_s.exp().sum(-1, keepdim=True)).clamp(min=FLOOR))
    rest_t = torch.log((1 - log_t.exp().sum(-1, keepdim=True)).clamp(min=FLOOR))
    return torch.cat([log_s, rest_s], -1), torch.cat([log_t, rest_t], -1)


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row; a bucket p gives no mass to adds nothing."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)


class Divergence(nn.Module):
    """Mean over the counted tokens of a divergence between student and teacher, times temperature squared (so
    gradients keep their scale across temperatures, as Hinton et al. do), plus `ce_weight` x the cross-entropy of
    the labels. Counted: tokens whose label is not IGNORE and, if a mask is given, where it is true."""

    def __init__(self, temperature: float = 1.0, ce_weight: float = 0.0, chunk_tokens: int = 1024):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the temperature must be positive, not {temperature}")
        self.temperature, self.ce_weight, self.chunk_tokens = temperature, ce_weight, chunk_tokens

    def divergence(self, log_s: Tensor, log_t: Tensor) -> Tensor:
        raise NotImplementedError

    def _chunk(self, student: Tensor, teacher: Tensor | TopK, labels: Tensor) -> Tensor:
        log_s, log_t = buckets(student, teacher, self.temperature)
        loss = self.divergence(log_s, log_t).sum() * self.temperature ** 2
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(student.float(), labels, reduction="sum")
        return loss

    def forward(self, student_logits: Tensor, teacher: Tensor | TopK, labels: Tensor,
                mask: Tensor | None = None) -> Tensor:
        V = student_logits.shape[-1]
        counted = labels.reshape(-1) != IGNORE
        if mask is not None:
            counted &= mask.reshape(-1)
        rows = counted.nonzero()[:, 0]
        if not len(rows):
            return student_logits.sum() * 0.0
        student = student_logits.reshape(-1, V)
        if isinstance(teacher, Tensor):
            teacher = teacher.reshape(-1, teacher.shape[-1])
        else:
            teacher = TopK(teacher.indices.reshape(-1, teacher.indices.shape[-1]),
                           teacher.logprobs.reshape(-1, teacher.logprobs.shape[-1]))
        labels = labels.reshape(-1)
        total = student_logits.new_zeros((), dtype=torch.float32)
        for lo in range(0, len(rows), self.chunk_tokens):
            r = rows[lo:lo + self.chunk_tokens]
            args = (student[r], teacher[r], labels[r])
            total = total + (checkpoint(self._chunk, *args, use_reentrant=False) if student.requires_grad
                             else self._chunk(*args))
        return total / len(rows)


class ForwardKL(Divergence):
    """KL(teacher || student): the student covers all the teacher's modes (the default; Minitron's logit loss)."""

    def divergence(self, log_s, log_t):
        return kl(log_t, log_s)


class ReverseKL(Divergence):
    """KL(student || teacher): mode-seeking, the student puts its mass where the teacher's is largest."""

    def divergence(self, log_s, log_t):
        return kl(log_s, log_t)


class GeneralizedJSD(Divergence):
    """TRL's GKD divergence: beta KL(teacher || m) + (1 - beta) KL(student || m), m = beta teacher + (1 - beta)
    student; beta 0 is forward KL, 1 reverse KL."""

    def __init__(self, beta: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must lie in [0, 1], not {beta}")
        self.beta = beta

    def divergence(self, log_s, log_t):
        if self.beta == 0:
            return kl(log_t, log_s)
        if self.beta == 1:
            return kl(log_s, log_t)
        log_m = torch.logaddexp(log_t + math.log(self.beta), log_s + math.log(1 - self.beta))
        return self.beta * kl(log_t, log_m) + (1 - self.beta) * kl(log_s, log_m)


class SkewKL(Divergence):
    """DistiLLM's skew KL: KL(teacher || alpha teacher + (1 - alpha) student), bounded where the student gives a
    teacher token almost no mass; alpha 0 is forward KL."""

    def __init__(self, alpha: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), not {alpha}")
        self.alpha = alpha

    def divergence(self, log_s, log_t):
        if self.alpha == 0:
            return kl(log_t, log_s)
        log_m = torch.logaddexp(log_t + math.log(self.alpha), log_s + math.log(1 - self.alpha))
        return kl(log_t, log_m)


class CrossEntropy(nn.Module):
    """Plain next-token cross-entropy on the labels (fine-tuning on a teacher's text: sequence-level
    distillation), in the losses' call shape; the teacher argument is unused and may be None."""

    def forward(self, student_logits: Tensor, teacher, labels: Tensor, mask: Tensor | None = None) -> Tensor:
        labels = labels.reshape(-1)
        if mask is not None:
            labels = torch.where(mask.reshape(-1), labels, IGNORE)
        if not bool((labels != IGNORE).any()):
            return student_logits.sum() * 0.0
        return F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]).float(), labels,
                               ignore_index=IGNORE)


class HiddenStateLoss(nn.Module):
    """1 - cosine similarity between the student's last hidden states and the teacher's, averaged over the
    counted tokens. A pruned student's hidden channels are a subset of its teacher's: `channels` names them, and
    the teacher's states are compared on those."""

    def __init__(self, channels: Tensor | None = None):
        super().__init__()
        self.channels = channels

    def forward(self, student_hidden: Tensor, teacher_hidden: Tensor, labels: Tensor,
                mask: Tensor | None = None) -> Tensor:
        if self.channels is not None:
            teacher_hidden = teacher_hidden.index_select(-1, self.channels)
        if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
            raise ValueError(f"hidden sizes differ ({student_hidden.shape[-1]} vs {teacher_hidden.shape[-1]}): "
                             "a hidden-state loss needs the student's channels among the teacher's")
        counted = labels != IGNORE if mask is None else (labels != IGNORE) & mask
        cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
        return ((1 - cos) * counted).sum() / counted.sum().clamp(min=1)


DIVERGENCES = {"forward_kl": ForwardKL, "reverse_kl": ReverseKL, "jsd": GeneralizedJSD, "skew_kl": SkewKL}


def divergence_named(name: str, **kwargs) -> Divergence:
    if name not in DIVERGENCES:
        raise ValueError(f"unknown loss {name!r} (choose from {', '.join(DIVERGENCES)})")
    return DIVERGENCES[name](**kwargs)
