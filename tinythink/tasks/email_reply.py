"""email-reply: a reply to an email in a given tone that mentions the facts it must, checked (the response lists
any fact the reply leaves out)."""

from __future__ import annotations

from pydantic import Field

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.teach.jobs import _mentioned, email_messages


class EmailReplyRequest(TaskRequest):
    text: str = Field(min_length=1, description="the email to answer")
    tone: str = Field("friendly", min_length=1, max_length=40, description="e.g. friendly, formal, apologetic")
    facts: list[str] = Field([], max_length=20, description="what the reply must mention")
    max_tokens: int = Field(300, ge=16, le=2048, description="the longest reply, in tokens")


class EmailReplyResponse(TaskResponse):
    reply: str
    missing_facts: list[str] = Field(description="facts the reply does not mention (empty when all are in)")


async def run(model: TaskModel, r: EmailReplyRequest) -> EmailReplyResponse:
    item = {"text": r.text, "tone": r.tone, "facts": r.facts}
    chat = email_messages(item) if r.facts else \
        [{"role": "user", "content": f"Write a {r.tone} reply to this email.\n\nEmail:\n{r.text}"}]
    reply = (await model.write(chat, r.max_tokens)).strip()
    return EmailReplyResponse(model=model.name, reply=reply,
                              missing_facts=[f for f in r.facts if not _mentioned(f, reply.lower())])


TASK = Task("email-reply", "a reply to an email, in your tone, with the facts it must mention", EmailReplyRequest,
            EmailReplyResponse, run)
