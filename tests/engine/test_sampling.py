"""Sampling: reproducible with a seed, and each knob doing what it says."""

import pytest
import torch

from tinythink.engine.generate import generate
from tinythink.engine.sampling import InvalidSettingError, Sampler, SamplingParams

PROMPT_TEXT = "<|im_start|>user\nTell me something surprising about octopuses.<|im_end|>\n<|im_start|>assistant\n"


def run(ours, **kw):
    prompt = ours.tokenizer.encode(PROMPT_TEXT)
    return list(generate(ours.model, prompt, SamplingParams(max_tokens=24, **kw)))


def test_seeded_sampling_is_reproducible(ours):
    a = run(ours, temperature=1.0, top_p=0.95, seed=1234)
    b = run(ours, temperature=1.0, top_p=0.95, seed=1234)
    c = run(ours, temperature=1.0, top_p=0.95, seed=4321)
    assert a == b
    assert a != c


def test_top_k_1_is_greedy(ours):
    assert run(ours, temperature=1.0, top_k=1, seed=7) == run(ours, temperature=0.0)


LOGITS = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])


def draws(params: SamplingParams, n: int = 400) -> set[int]:
    sampler = Sampler(params, prompt=[5], vocab_size=6)
    return {int(sampler.sample(sampler.adjust(LOGITS))) for _ in range(n)}


def test_filters_limit_the_candidates():
    assert draws(SamplingParams(temperature=1.0, top_k=2, seed=0)) == {0, 1}
    # softmax of LOGITS: 0.64, 0.24, 0.09, ... -> the top 0.8 of the mass needs tokens 0 and 1
    assert draws(SamplingParams(temperature=1.0, top_p=0.8, seed=0)) == {0, 1}
    assert draws(SamplingParams(temperature=1.0, top_p=0.0, seed=0)) == {0}  # OpenAI's 0: the top token only
    # min_p 0.2: keep tokens with at least 0.2 x 0.64 = 0.128 probability
    assert draws(SamplingParams(temperature=1.0, min_p=0.2, seed=0)) == {0, 1}
    assert draws(SamplingParams(temperature=2.0, seed=0)) == {0, 1, 2, 3, 4, 5}


def test_penalties_and_bias():
    s = Sampler(SamplingParams(repetition_penalty=2.0), prompt=[0, 5], vocab_size=6)
    adjusted = s.adjust(LOGITS)
    assert adjusted[0] == 2.0 and adjusted[5] == -2.0 and adjusted[1] == 3.0  # seen: divided if >0, else multiplied
    s = Sampler(SamplingParams(frequency_penalty=0.5, presence_penalty=1.0), prompt=[], vocab_size=6)
    for token in (1, 1, 2):
        s.seen[token] = True
        s.counts[token] += 1
    adjusted = s.adjust(LOGITS)
    assert adjusted[1] == 3.0 - 2 * 0.5 - 1.0 and adjusted[2] == 2.0 - 0.5 - 1.0 and adjusted[0] == 4.0
    s = Sampler(SamplingParams(temperature=0.0, logit_bias={3: 100.0}), prompt=[], vocab_size=6)
    assert s(LOGITS) == 3


def test_refused_tokens_are_masked_and_another_drawn():
    s = Sampler(SamplingParams(temperature=0.0, logprobs=2), prompt=[], vocab_size=6)
    assert s(LOGITS, refuse=lambda token: token in (0, 1)) == 2  # the best token the rule allows
    assert s.logprobs[-1][0] == 2 and s.counts[2] == 1 and s.counts[0] == 0  # recorded once, as drawn
    seeded = Sampler(SamplingParams(temperature=2.0, seed=0), prompt=[], vocab_size=6)
    assert all(seeded(LOGITS, refuse=lambda token: token % 2 == 0) % 2 for _ in range(50))
    everything = Sampler(SamplingParams(temperature=0.0), prompt=[], vocab_size=6)
    assert everything(LOGITS, refuse=lambda token: True) in range(6)  # nothing allowed: it takes what it drew


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=-0.1), "temperature"), (dict(top_p=-0.1), "top_p"), (dict(top_k=-1), "top_k"),
    (dict(min_p=1.5), "min_p"), (dict(max_tokens=0), "max_tokens"), (dict(repetition_penalty=0.0), "repetition"),
    (dict(frequency_penalty=3.0), "frequency"), (dict(presence_penalty=-3.0), "presence"),
    (dict(logit_bias={1: 500.0}), "logit_bias"),
])
def test_out_of_range_settings_are_clear_errors(bad, message):
    with pytest.raises(InvalidSettingError, match=message):
        SamplingParams(**bad)


def test_logit_bias_token_out_of_vocabulary():
    with pytest.raises(InvalidSettingError, match="between 0 and 5"):
        Sampler(SamplingParams(logit_bias={99: 1.0}), prompt=[], vocab_size=6)
