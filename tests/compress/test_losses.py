"""The distillation losses against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinythink.compress.losses import (IGNORE, CrossEntropy, ForwardKL, GeneralizedJSD, HiddenStateLoss, ReverseKL,
                                       SkewKL, TopK)


def by_hand_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(2, 5, 11), torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))


def test_forward_and_reverse_kl_equal_the_definition(logits):
    s, t, labels = logits
    ps, pt = s.softmax(-1), t.softmax(-1)
    assert torch.isclose(ForwardKL()(s, t, labels), by_hand_kl(pt, ps).mean(), atol=1e-6)
    assert torch.isclose(ReverseKL()(s, t, labels), by_hand_kl(ps, pt).mean(), atol=1e-6)


def test_temperature_scales_both_distributions_and_the_loss_by_its_square(logits):
    s, t, labels = logits
    T = 2.0
    want = by_hand_kl((t / T).softmax(-1), (s / T).softmax(-1)).mean() * T * T
    assert torch.isclose(ForwardKL(temperature=T)(s, t, labels), want, atol=1e-6)


def test_jsd_and_skew_kl_by_hand(logits):
    s, t, labels = logits
    ps, pt = s.softmax(-1), t.softmax(-1)
    beta = 0.3
    m = beta * pt + (1 - beta) * ps
    want = (beta * by_hand_kl(pt, m) + (1 - beta) * by_hand_kl(ps, m)).mean()
    assert torch.isclose(GeneralizedJSD(beta=beta)(s, t, labels), want, atol=1e-6)
    assert torch.isclose(GeneralizedJSD(beta=0.0)(s, t, labels), ForwardKL()(s, t, labels), atol=1e-6)
    assert torch.isclose(GeneralizedJSD(beta=1.0)(s, t, labels), ReverseKL()(s, t, labels), atol=1e-6)
    alpha = 0.2
    skew = by_hand_kl(pt, alpha * pt + (1 - alpha) * ps).mean()
    assert torch.isclose(SkewKL(alpha=alpha)(s, t, labels), skew, atol=1e-6)


@pytest.mark.parametrize("loss", [ForwardKL(), ReverseKL(), GeneralizedJSD(), SkewKL()])
def test_identical_logits_give_zero(logits, loss):
    s, _, labels = logits
    assert loss(s, s.clone(), labels).abs() < 1e-6


def test_ignored_and_masked_tokens_do_not_count(logits):
    s, t, labels = logits
    labels = labels.clone()
    labels[0] = IGNORE
    mask = torch.ones_like(labels, dtype=torch.bool)
    mask[1, :2] = False
    want = by_hand_kl(t[1, 2:].softmax(-1), s[1, 2:].softmax(-1)).mean()
    assert torch.isclose(ForwardKL()(s, t, labels, mask), want, atol=1e-6)


def test_cross_entropy_mix_and_the_plain_cross_entropy(logits):
    s, t, labels = logits
    ce = F.cross_entropy(s.reshape(-1, 11), labels.reshape(-1))
    assert torch.isclose(CrossEntropy()(s, None, labels), ce, atol=1e-6)
    mixed = ForwardKL(ce_weight=0.5)(s, t, labels)
    assert torch.isclose(mixed, ForwardKL()(s, t, labels) + 0.5 * ce, atol=1e-5)


def test_chunks_give_the_same_loss_and_gradients(logits):
    s, t, labels = logits
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    whole = ForwardKL(chunk_tokens=1000)(a, t, labels)
    chunked = ForwardKL(chunk_tokens=3)(b, t, labels)
    whole.backward()
    chunked.backward()
    assert torch.isclose(whole, chunked, atol=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_top_k_covering_the_vocabulary_equals_full_logits(logits):
    s, t, labels = logits
    top = torch.log_softmax(t, -1).topk(11, dim=-1)
    cached = TopK(top.indices, top.values)
    for loss in (ForwardKL(), ReverseKL(), GeneralizedJSD(beta=0.4)):
        assert torch.isclose(loss(s, cached, labels), loss(s, t, labels), atol=1e-6)


def test_top_k_with_the_rest_as_one_bucket(logits):
    s, t, labels = logits
    k = 4
    top = torch.log_softmax(t, -1).topk(k, dim=-1)
    ps = s.softmax(-1)
    ps_top = ps.gather(-1, top.indices)
    pt_top = top.values.exp()
    p = torch.cat([pt_top, 1 - pt_top.sum(-1, keepdim=True)], -1)
    q = torch.cat([ps_top, 1 - ps_top.sum(-1, keepdim=True)], -1)
    assert torch.isclose(ForwardKL()(s, TopK(top.indices, top.values), labels), by_hand_kl(p, q).mean(), atol=1e-5)


def test_hidden_state_loss_compares_the_kept_channels():
    torch.manual_seed(0)
    teacher = torch.randn(2, 3, 8)
    channels = torch.tensor([0, 2, 5])
    labels = torch.zeros(2, 3, dtype=torch.long)
    assert HiddenStateLoss(channels)(teacher[..., channels], teacher, labels) < 1e-6
    other = torch.randn(2, 3, 3)
    cos = F.cosine_similarity(other, teacher[..., channels], dim=-1)
    assert math.isclose(HiddenStateLoss(channels)(other, teacher, labels).item(), (1 - cos).mean().item(), abs_tol=1e-6)
    with pytest.raises(ValueError, match="hidden sizes differ"):
        HiddenStateLoss()(other, teacher, labels)
