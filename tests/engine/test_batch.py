"""The continuous-batching engine on the real default model."""

import threading

import pytest
import torch

from tinythink.engine.batch import BatchEngine, kv_bytes_per_token
from tinythink.engine.generate import PromptTooLongError, generate
from tinythink.engine.sampling import SamplingParams

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "Is 17 a prime number?",
             "Name three colours.", "Summarise: the meeting moved to Tuesday because the room was booked.",
             "Classify the sentiment of 'I hate waiting in line': positive or negative?"]
SYSTEM = ("You are a support assistant for Acme Cloud. Answer briefly and politely. Our products: storage, compute, "
          "databases and networking. Refunds take 5 business days. Outages are posted on the status page. ") * 3


def chat(tok, question, system=None):
    sys_part = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return tok.encode(f"{sys_part}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture
def engine(ours):
    eng = BatchEngine(ours.model, max_batch=4, kv_budget_bytes=256 << 20, prefill_chunk=64, prefix_block=32)
    yield eng
    eng.stop()
    ours.model.clear_caches()


GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
BFLOAT16_KV = 0.05  # how far the engine's logprobs may be from a plain forward pass's: its cache is bfloat16


def alone(ours, prompt, params):
    return list(generate(ours.model, prompt, params, ours.tokenizer.stop_ids))


def test_batched_greedy_equals_unbatched(ours, engine):
    tok = ours.tokenizer
    prompts = [chat(tok, q) for q in QUESTIONS]  # 6 requests through 4 slots: some wait, then join
    params = [SamplingParams(max_tokens=8 + 4 * i, temperature=0.0) for i in range(len(prompts))]
    batched = engine.generate(prompts, params, tok.stop_ids)
    for prompt, p, out in zip(prompts, params, batched):
        assert out == alone(ours, prompt, p)


def test_mixed_sampling_settings_share_a_batch(ours, engine):
    tok = ours.tokenizer
    prompts = [chat(tok, q) for q in QUESTIONS[:4]]
    params = [GREEDY, SamplingParams(max_tokens=20, temperature=0.8, top_p=0.9, seed=3),
              SamplingParams(max_tokens=20, temperature=1.0, top_k=20, seed=5, presence_penalty=0.5), GREEDY]
    batched = engine.generate(prompts, params, tok.stop_ids)
    for prompt, p, out in zip(prompts, params, batched):
        assert out == alone(ours, prompt, p)


def record_logits(req):
    seen = []
    sampler = req.sampler

    def recording(logits):
        seen.append(logits.clone())
        return sampler(logits)

    req.sampler = recording
    return seen


def test_prefix_cache_hit_gives_identical_logits(ours, engine):
    tok = ours.tokenizer
    prompt = chat(tok, "How long do refunds take?", SYSTEM)
    cold = engine.submit(prompt, GREEDY, tok.stop_ids)
    cold_logits = record_logits(cold)
    list(engine.tokens(cold))
    assert cold.cached_tokens == 0
    warm = engine.submit(prompt, GREEDY, tok.stop_ids)
    warm_logits = record_logits(warm)
    list(engine.tokens(warm))
    assert warm.cached_tokens >= len(prompt) - 32  # all complete blocks but the last token's
    assert warm.output == cold.output
    assert all(torch.equal(a, b) for a, b in zip(cold_logits, warm_logits))
    # a different question after the same system prompt reuses the shared part only
    other = engine.submit(chat(tok, "Where are outages posted?", SYSTEM), GREEDY, tok.stop_ids)
    list(engine.tokens(other))
    assert 0 < other.cached_tokens < len(other.prompt)
    assert other.output == alone(ours, other.prompt, GREEDY)


def test_scored_prompts_share_their_prefix(ours, engine):
    """The options of a multiple-choice question, scored one prompt each (as evaluation harnesses do), compute
    their shared context once, and get the logprobs a plain forward pass gives."""
    tok = ours.tokenizer
    context = tok.encode(SYSTEM + "Question: how long do refunds take?\nAnswer:")
    options = [context + tok.encode(o, add_special_tokens=False) for o in (" 5 business days", " one week")]
    scoring = SamplingParams(max_tokens=0, prompt_logprobs=0)
    reqs = []
    for prompt in options:  # one after the other: the second finds the first's blocks
        reqs.append(engine.submit(prompt, scoring))
        list(engine.tokens(reqs[-1]))
    assert reqs[0].cached_tokens == 0 and len(context) - 32 <= reqs[1].cached_tokens <= len(context)
    for prompt, req in zip(options, reqs):
        with torch.inference_mode():
            expected = torch.log_softmax(ours.model(torch.tensor([prompt]))[0], dim=-1)
        assert [t for t, _, _ in req.prompt_logprobs] == prompt[1:]
        assert [lp for _, lp, _ in req.prompt_logprobs] == \
            pytest.approx([expected[i, t].item() for i, t in enumerate(prompt[1:])], abs=BFLOAT16_KV)
    # cached entries carry no alternatives: a request asking for them computes its prompt again
    again = engine.submit(options[1], SamplingParams(max_tokens=0, prompt_logprobs=2))
    list(engine.tokens(again))
    assert again.cached_tokens == 0 and all(len(alts) == 2 for _, _, alts in again.prompt_logprobs)


def test_replies_scored_after_a_shared_prompt_get_its_logprobs_and_share_its_blocks(ours, engine):
    """score_from: only the reply's tokens are scored (the task endpoints' label scoring); the prompt's blocks are
    shared as plain keys and values, with generating requests too, and the entries equal a plain forward's."""
    tok = ours.tokenizer
    context = tok.encode(SYSTEM + "Question: how long do refunds take?\nAnswer:")
    replies = [tok.encode(o, add_special_tokens=False) for o in (" 5 business days", " one week", " never")]
    scoring = SamplingParams(max_tokens=0, prompt_logprobs=0, score_from=len(context))
    reqs = [engine.submit(context + r, scoring) for r in replies]  # all at once, as a task submits them
    for req in reqs:
        list(engine.tokens(req))
    assert reqs[0].cached_tokens == 0 and all(r.cached_tokens >= len(context) - 32 for r in reqs[1:])
    for reply, req in zip(replies, reqs):
        prompt = context + reply
        with torch.inference_mode():
            expected = torch.log_softmax(ours.model(torch.tensor([prompt]))[0], dim=-1)
        assert [t for t, _, _ in req.prompt_logprobs] == reply
        assert [lp for _, lp, _ in req.prompt_logprobs] == pytest.approx(
            [expected[i - 1, prompt[i]].item() for i in range(len(context), len(prompt))], abs=BFLOAT16_KV)
    chat = engine.submit(context + tok.encode(" 3", add_special_tokens=False), GREEDY)  # a generating request
    list(engine.tokens(chat))
    assert chat.cached_tokens >= len(context) - 32


def test_requests_arriving_together_share_their_prefix(ours, engine):
    """Options sent at once (as lm-eval does) and chats with one system prompt arriving together: the later ones
    wait for the first's prefill to store the shared blocks, then take them; results are unchanged."""
    tok = ours.tokenizer
    context = tok.encode(SYSTEM + "Question: how long do refunds take?\nAnswer:")
    options = [context + tok.encode(o, add_special_tokens=False) for o in (" 5 business days", " one week", " never")]
    scored = [engine.submit(prompt, SamplingParams(max_tokens=0, prompt_logprobs=0)) for prompt in options]
    chats = [engine.submit(chat(tok, q, SYSTEM + "Be concise."), GREEDY, tok.stop_ids) for q in QUESTIONS[:2]]
    while not all(r.done for r in scored + chats):
        engine.step()
    assert scored[0].cached_tokens == 0 and all(len(context) - 32 <= r.cached_tokens for r in scored[1:])
    for prompt, req in zip(options, scored):
        with torch.inference_mode():
            expected = torch.log_softmax(ours.model(torch.tensor([prompt]))[0], dim=-1)
        assert [lp for _, lp, _ in req.prompt_logprobs] == \
            pytest.approx([expected[i, t].item() for i, t in enumerate(prompt[1:])], abs=BFLOAT16_KV)
    # the chats share the system prompt with each other, and its first blocks with the scored context
    assert chats[1].cached_tokens >= len(tok.encode(SYSTEM)) - 32
    for req in chats:
        assert req.output == alone(ours, req.prompt, GREEDY)


def test_prefix_cache_is_bounded(ours):
    block_bytes = 32 * kv_bytes_per_token(ours.model)
    eng = BatchEngine(ours.model, max_batch=2, kv_budget_bytes=64 << 20, prefill_chunk=64, prefix_block=32,
                      prefix_cache_bytes=3 * block_bytes)
    try:
        tok = ours.tokenizer
        eng.generate([chat(tok, "Hello", SYSTEM)], SamplingParams(max_tokens=2, temperature=0.0))
        assert len(eng.prefix_cache.blocks) == 3 and eng.prefix_cache.bytes <= 3 * block_bytes
    finally:
        ours.model.clear_caches()


def test_cancellation_frees_the_slot_at_once(ours, engine):
    tok = ours.tokenizer
    long = SamplingParams(max_tokens=200, temperature=0.0)
    reqs = [engine.submit(chat(tok, q), long, frozenset()) for q in QUESTIONS[:5]]
    engine.step()
    assert reqs[4].slot is None and len(engine.free) == 0  # 4 slots, all taken; the fifth waits
    slot = reqs[1].slot
    engine.cancel(reqs[1])
    assert reqs[1].finish_reason == "cancelled" and slot in engine.free
    engine.step()
    assert reqs[4].slot == slot  # the waiting request got the freed slot on the next step
    assert list(engine.tokens(reqs[1])) == reqs[1].output  # its stream ends
    for r in reqs:
        engine.cancel(r)
    assert sorted(engine.free) == [0, 1, 2, 3] and engine.active == 0


def test_a_long_prompt_does_not_stall_the_others(ours, engine):
    tok = ours.tokenizer
    short = engine.submit(chat(tok, "Count from one to twenty."), SamplingParams(max_tokens=40, temperature=0.0))
    while not short.output:
        engine.step()
    long_prompt = chat(tok, "Summarise this. " + "The quarterly report shows steady growth in every region. " * 40)
    long = engine.submit(long_prompt, GREEDY)
    for _ in range(3):  # 64-token chunks: many steps of prefill, and the short request advances on every one
        before = len(short.output)
        engine.step()
        assert len(short.output) == before + 1 and 0 < long.pos < len(long_prompt)


def test_engine_thread_serves_concurrent_clients(ours, engine):
    tok = ours.tokenizer
    engine.start()
    prompts = [chat(tok, q) for q in QUESTIONS]
    results = [None] * len(prompts)

    def client(i):
        req = engine.submit(prompts[i], GREEDY, tok.stop_ids)
        results[i] = list(engine.tokens(req))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for prompt, out in zip(prompts, results):
        assert out == alone(ours, prompt, GREEDY)


def test_prompt_longer_than_a_slot_is_rejected(ours, engine):
    with pytest.raises(PromptTooLongError):
        engine.submit(list(range(100, 100 + engine.context)), GREEDY)


def test_kv_pool_sized_by_its_context(ours):
    try:
        eng = BatchEngine(ours.model, max_batch=3, context=100, kv_budget_bytes=None)
        assert eng.context == 100 and ours.model.layers[0].self_attn.kv_cache.k.shape[:3] == (3, 3, 100)
        with pytest.raises(ValueError, match="needs the context"):
            BatchEngine(ours.model, max_batch=3, kv_budget_bytes=None)
    finally:
        ours.model.clear_caches()


def test_background_work_waits_behind_interactive_requests_and_leaves_them_a_slot(ours, engine):
    tok = ours.tokenizer
    long = SamplingParams(max_tokens=40, temperature=0.0)
    background = [engine.submit(chat(tok, q), long, tok.stop_ids, background=True) for q in QUESTIONS]
    engine.step()
    assert engine.active == engine.max_batch - engine.reserved == 3  # one of the 4 slots stays free
    late = engine.submit(chat(tok, "Hi!"), GREEDY, tok.stop_ids)  # an interactive request arrives later
    engine.step()
    assert late in engine.prefilling or late in engine.decoding.values() or late.done  # admitted at once
    assert sum(r.slot is not None for r in background) == 3
    while not all(r.done for r in background + [late]):
        engine.step()
        assert sum(1 for r in engine.decoding.values() if r.background) <= 3
    assert late.output == alone(ours, chat(tok, "Hi!"), GREEDY)
    assert background[0].output == alone(ours, chat(tok, QUESTIONS[0]), long)
