"""keywords: the text's most important phrases, each one found in the text (never invented).

The model proposes phrases as JSON (constrained decoding); a phrase it did not copy from the text is dropped, and
where fewer than n remain, the text's best key phrases by RAKE fill the list.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import Field

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel, UnfinishedAnswer
from tinythink.teach.jobs import keywords_messages, keywords_schema

STOPWORDS = set("""a about after again all also an and any are as at be because been before being between both but
by can could did do does doing down during each few for from further had has have having he her here hers him his
how i if in into is it its just me more most my no nor not now of off on once only or other our out over own same
she should so some such than that the their them then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours""".split())


class KeywordsRequest(TaskRequest):
    text: str = Field(min_length=1, description="the text to take keywords from")
    n: int = Field(5, ge=1, le=20, description="how many keywords")


class KeywordsResponse(TaskResponse):
    keywords: list[str] = Field(description="phrases as they appear in the text, most important first")
    dropped: list[str] = Field(description="phrases the model proposed that are not in the text")


def find(phrase: str, text: str) -> str | None:
    """The phrase as the text writes it (case aside, whitespace normalized), or None."""
    words = phrase.split()
    if not words:
        return None
    match = re.search(r"\b" + r"\s+".join(map(re.escape, words)) + r"\b", text, re.IGNORECASE)
    return match.group(0) if match else None


def key_phrases(text: str) -> list[str]:
    """RAKE (Rose et al. 2010): candidate phrases are the runs of words between stopwords and punctuation, each
    word scored by its degree over its frequency, a phrase by the sum of its words; best first, as the text writes
    them."""
    phrases = []
    for run in re.split(r"[^\w\s'-]|\s-\s", text):
        current = []
        for word in run.split():
            if word.lower() in STOPWORDS or not re.search(r"[A-Za-z]", word):
                phrases.append(current)
                current = []
            else:
                current.append(word)
        phrases.append(current)
    phrases = [p[:3] for p in phrases if p]
    frequency, degree = Counter(), Counter()
    for p in phrases:
        for w in p:
            frequency[w.lower()] += 1
            degree[w.lower()] += len(p)
    scored = {}
    for p in phrases:
        scored.setdefault(" ".join(p), sum(degree[w.lower()] / frequency[w.lower()] for w in p))
    return sorted(scored, key=scored.get, reverse=True)


async def run(model: TaskModel, r: KeywordsRequest) -> KeywordsResponse:
    item = {"text": r.text, "n": r.n}
    # room for the longest answer the schema allows (n phrases of up to 60 characters, a token each at worst), so
    # that no valid request fails for want of tokens; a shorter answer stops at its closing brace anyway
    budget = 16 + 64 * r.n
    try:
        answer = await model.write_json(keywords_messages(item), keywords_schema(item), max_tokens=budget)
    except UnfinishedAnswer:  # the model looped within its list: the text's own key phrases answer alone
        answer = {}
    keywords, dropped = [], []

    def add(phrase: str):  # not one that repeats, or is part of, a keyword already kept
        if not any(phrase.lower() in k.lower() or k.lower() in phrase.lower() for k in keywords):
            keywords.append(phrase)

    for phrase in answer.get("keywords", []):
        found = find(phrase, r.text)
        if found is None:
            dropped.append(phrase)
        else:
            add(found)
    for phrase in key_phrases(r.text):  # the model gave fewer than n that are in the text
        if len(keywords) >= r.n:
            break
        add(phrase)
    return KeywordsResponse(model=model.name, keywords=keywords[:r.n], dropped=dropped)


TASK = Task("keywords", "the text's key phrases, each found in it", KeywordsRequest, KeywordsResponse, run)
