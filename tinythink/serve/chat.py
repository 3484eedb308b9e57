"""POST /v1/chat/completions: messages (with tools, JSON response formats and reasoning) to a reply, whole or
streamed."""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tinythink import __version__
from tinythink.engine.constraint import GrammarError
from tinythink.errors import TinythinkError
from tinythink.safety.filter import REFUSAL
from tinythink.serve import consistency, tools
from tinythink.serve.errors import APIError, served
from tinythink.serve.moderations import screening
from tinythink.serve.protocol import ChatCompletionRequest, NamedToolChoice
from tinythink.serve.responses import ChatCompletion, ChatCompletionChunk, documented
from tinythink.serve.streams import collect, logprob_content, merged, run_choices, sse, usage
from tinythink.text.reasoning import ReasoningSplitter, chat_text, with_instruction

FINGERPRINT = f"tinythink-{__version__}"
ANSWER_TOKENS = 512  # with reasoning and no max_completion_tokens: the thought's budget plus this many for the answer
CONSISTENCY_TEMPERATURE = 0.7  # self-consistency's samples, when the request asks for greedy decoding

router = APIRouter()


def response_schema(body: ChatCompletionRequest) -> dict | None:
    """The JSON schema that response_format asks the answer to follow, if any."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise APIError(400, "response_format.json_schema is required with type json_schema",
                       param="response_format.json_schema")
    return fmt.json_schema.schema_


def offered_tools(body: ChatCompletionRequest) -> tuple[list[dict], bool, bool]:
    """The functions the reply may call, whether it must call one, and whether it may call several."""
    if body.tool_choice is not None and not body.tools:
        raise APIError(400, "tool_choice needs tools", param="tool_choice")
    choice = body.tool_choice or ("auto" if body.tools else "none")
    if choice == "none":
        return [], False, False
    functions = [t.function.model_dump(exclude_none=True) for t in body.tools]
    if isinstance(choice, NamedToolChoice):
        functions = [f for f in functions if f["name"] == choice.function.name]
        if not functions:
            raise APIError(400, f"tool_choice names the function {choice.function.name!r}, which is not "
                                "among tools", param="tool_choice")
        return functions, True, False
    return functions, choice == "required", body.parallel_tool_calls


def chat_messages(body: ChatCompletionRequest) -> list[dict]:
    messages = []
    for i, m in enumerate(body.messages):
        text = m.text()
        if m.name and m.role != "tool" and text:  # tells participants of one role apart, in the text the model reads
            text = f"{m.name}: {text}"
        message = {"role": "system" if m.role == "developer" else m.role, "content": text}
        if m.role == "tool":
            if not m.tool_call_id:
                raise APIError(400, f"messages.{i}.tool_call_id: a tool message needs the id of the call it "
                                    "answers", param=f"messages.{i}.tool_call_id")
            message["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            if m.role != "assistant":
                raise APIError(400, f"messages.{i}.tool_calls: only assistant messages make tool calls",
                               param=f"messages.{i}.tool_calls")
            for call in m.tool_calls:
                try:
                    json.loads(call.function.arguments)
                except json.JSONDecodeError:
                    raise APIError(400, f"messages.{i}.tool_calls: the arguments of {call.id!r} are not "
                                        "valid JSON", param=f"messages.{i}.tool_calls") from None
            message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
        messages.append(message)
    return messages


def screened_input(body: ChatCompletionRequest) -> list[str]:
    """What the input check reads: the last user message, and what tools returned after it (where injected
    instructions arrive). Earlier turns were checked when they were new."""
    last_user = max((i for i, m in enumerate(body.messages) if m.role == "user"), default=-1)
    return [m.text() for m in body.messages[max(last_user, 0):] if m.role in ("user", "tool")]


def refused(base: dict, body: ChatCompletionRequest, prompt_tokens: int, screen) -> dict | StreamingResponse:
    """The reply to a blocked input, as OpenAI gives it: a refusal, finish_reason content_filter, no model call."""
    if not body.stream:
        choices = [{"index": i, "message": {"role": "assistant", "content": None, "refusal": REFUSAL},
                    "logprobs": None, "finish_reason": "content_filter"} for i in range(body.n)]
        return {**base, "object": "chat.completion", "choices": choices, "usage": usage(prompt_tokens * body.n, 0),
                **screen.fields()}

    def events():
        chunk = {**base, "object": "chat.completion.chunk"}
        for i in range(body.n):
            yield sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": None,
                                                                   "refusal": REFUSAL},
                                             "logprobs": None, "finish_reason": None}]})
            yield sse({**chunk, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                             "finish_reason": "content_filter"}], **screen.fields()})
        if body.stream_options and body.stream_options.include_usage:
            yield sse({**chunk, "choices": [], "usage": usage(prompt_tokens * body.n, 0)})
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


@router.post("/v1/chat/completions", responses=documented(ChatCompletion, ChatCompletionChunk))
async def chat_completions(body: ChatCompletionRequest, request: Request):
    settings, metrics = request.app.state.settings, request.app.state.metrics
    host = served(request.app.state.hosts, body.model)
    functions, must_call, parallel = offered_tools(body)
    template_knows_tools = tools.native(host.llm.template.source)
    messages = tools.prompt_messages(chat_messages(body), functions, template_knows_tools)
    effort = body.reasoning_effort
    budget = settings.thinking_budgets[effort] if effort else 0
    screen = screening(request, "chat.completions")
    if screen is not None and budget:  # the model may reason about the policy before it answers
        messages = with_instruction(messages, screen.filter.policy.reasoning_policy)
    try:
        kwargs = {"tools": [{"type": "function", "function": f} for f in functions]} \
            if functions and template_knows_tools else {}
        prompt = host.llm.tokenizer.encode(chat_text(host.llm.template, messages, bool(budget), **kwargs),
                                           add_special_tokens=False)
    except TinythinkError as e:
        raise APIError(400, str(e), param="messages") from None
    schema, grammar = response_schema(body), None
    try:
        if functions:
            grammar = host.grammars.lark(tools.grammar(functions, must_call, parallel, schema))
        elif schema is not None:
            grammar = host.grammars.json_schema(schema)
    except GrammarError as e:
        raise APIError(400, str(e), param="tools" if functions else "response_format.json_schema") from None
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": cid, "created": created, "model": body.model, "system_fingerprint": FINGERPRINT}
    if screen is not None and (await screen.check("input", screened_input(body))).blocked:
        return refused(base, body, len(prompt), screen)
    max_tokens = body.max_completion_tokens or body.max_tokens
    if budget and max_tokens is None:  # room for the whole thought and an answer, as reasoning models default
        max_tokens = budget + ANSWER_TOKENS
    samples = settings.self_consistency if effort == "high" and not functions else 1
    votes: list[dict | None] = [None] * body.n
    if samples > 1:  # several thoughts a choice, sampled together; the majority's reply is the choice
        sampled = body.model_copy(update={"temperature": body.temperature or CONSISTENCY_TEMPERATURE})
        runs = await run_choices(host, metrics, [prompt] * (body.n * samples), sampled, max_tokens, budget, grammar,
                                 screen)
        streams = []
        for i in range(body.n):
            stream, votes[i] = await consistency.replay(runs[i * samples:(i + 1) * samples], bool(budget))
            streams.append(stream)
    else:
        streams = await run_choices(host, metrics, [prompt] * body.n, body, max_tokens, budget, grammar, screen)
    disclaimer = screen.disclaimer if screen is not None else str  # both read once the replies are checked
    reported = screen.fields if screen is not None else dict
    if not body.stream:
        choices, total, thought = [], 0, 0
        for i, c in enumerate(await collect(streams, request)):
            total, thought = total + c.tokens, thought + c.reasoning_tokens
            message, answer, finish = {"role": "assistant"}, c.text, c.finish_reason
            if budget:
                splitter = ReasoningSplitter()
                (r1, a1), (r2, a2) = splitter.feed(c.text), splitter.flush()
                message["reasoning_content"], answer = r1 + r2, a1 + a2
            calls = tools.parse_calls(answer) if functions else None
            if disclaimer() and not calls:
                answer += f"\n\n{disclaimer()}"
            message.update(content=None if calls else answer, refusal=None)
            if calls:
                message["tool_calls"], finish = [call.openai() for call in calls], "tool_calls"
            logprobs = {"content": logprob_content(host, c.logprobs)} if body.logprobs else None
            choices.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish,
                            **({"self_consistency": votes[i]} if votes[i] is not None else {})})
        return {**base, "object": "chat.completion", "choices": choices,
                "usage": usage(len(prompt) * body.n, total, thought if effort else None), **reported()}

    async def events():
        chunk_base = {**base, "object": "chat.completion.chunk"}
        total, thought = 0, 0
        splitters = [ReasoningSplitter() if budget else None for _ in range(body.n)]
        held = [tools.CallBuffer() if functions else None for _ in range(body.n)]

        def delta_event(i, delta, logprobs=None, finish_reason=None):
            extra = {"self_consistency": votes[i]} if finish_reason and votes[i] is not None else {}
            return sse({**chunk_base, "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                                   "finish_reason": finish_reason, **extra}],
                        **(reported() if finish_reason else {})})

        for i in range(body.n):
            yield delta_event(i, {"role": "assistant", "content": ""})
        async for i, chunk in merged(streams):
            total, thought = total + len(chunk.token_ids), thought + chunk.reasoning_tokens
            reasoning, answer = ("", chunk.text) if splitters[i] is None else splitters[i].feed(chunk.text)
            if chunk.finish_reason and splitters[i] is not None:
                r, a = splitters[i].flush()
                reasoning, answer = reasoning + r, answer + a
            if held[i] is not None:
                answer = held[i].feed(answer)
            if reasoning:
                yield delta_event(i, {"reasoning_content": reasoning})
            if answer or chunk.logprobs:
                logprobs = {"content": logprob_content(host, chunk.logprobs)} if body.logprobs else None
                yield delta_event(i, {"content": answer}, logprobs)
            if chunk.finish_reason:
                finish = chunk.finish_reason
                if held[i] is not None:
                    calls, rest = held[i].finish()
                    if calls:
                        finish = "tool_calls"
                        yield delta_event(i, {"tool_calls": [c.openai(k) for k, c in enumerate(calls)]})
                    elif rest:
                        yield delta_event(i, {"content": rest})
                if disclaimer() and finish != "tool_calls":
                    yield delta_event(i, {"content": f"\n\n{disclaimer()}"})
                yield delta_event(i, {}, finish_reason=finish)
        if body.stream_options and body.stream_options.include_usage:
            yield sse({**chunk_base, "choices": [],
                       "usage": usage(len(prompt) * body.n, total, thought if effort else None)})
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
