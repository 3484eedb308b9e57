"""`tinythink teach`: a teacher's answers to the seed's jobs and its verified reasoning, taught to a student as a
LoRA adapter. Stages, each resumable, under the output directory:

- write:  the teacher writes inputs from seeds (tickets, reviews, emails, notes)           -> write.jsonl
- answer: the jobs' inputs (packaged and written) answered, checked, samples agreeing     -> answers.jsonl
- reason: reasoning problems solved step by step, only correct traces kept                  -> traces.jsonl
- dev:    the evaluation's dev examples with their datasets' own answers (no teacher)       -> dev.jsonl
- train:  the student learns the kept answers (completion tokens only) through LoRA         -> adapter/

Every kept row records its teacher (file sha256), prompt, settings and source. The teacher's text is the
student's target (sequence-level distillation), so teacher and student may use different tokenizers.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tinythink.errors import TinythinkError
from tinythink.model.registry import BASE_MODEL
from tinythink.teach import generate, inputs, traces
from tinythink.teach.jobs import JOBS, Job, _json


STAGES = ("write", "answer", "reason", "dev", "train")


@dataclass
class TeachSettings:
    teacher: str
    out: str
    teacher_endpoint: str | None = None  # the teacher already served there (as `teacher`), instead of loading it
    student: str = BASE_MODEL
    per_job: int = 200  # inputs per job
    problems: int = 300  # reasoning problems per generator
    choice_problems: int = 150  # dev questions per multiple-choice task, reasoned through
    trace_tokens: int = 400  # the most tokens a worked solution may take
    samples: int = 3  # teacher samples for jobs with one right answer (and for traces)
    agreement: float = 2 / 3  # the fraction of samples that must agree
    temperature: float = 0.7
    concurrency: int = 32
    rank: int = 32
    alpha: float = 64.0
    lr: float = 2e-4
    epochs: float = 2.0
    seq_len: int = 1024
    max_time: float | None = None
    jobs: tuple[str, ...] = tuple(JOBS)
    datasets: tuple[str, ...] = traces.REASONING  # reasoning generators, choice tasks
    dev_answers: tuple[tuple[str, int], ...] = tuple(inputs.DEV_ANSWERS.items())  # (task, examples) for `dev`
    seed: int = 0


def teacher_sha(ref: str) -> str:
    from tinythink.eval.fetch import sha256
    from tinythink.model.registry import resolve

    return sha256(resolve(ref))


# ---- the jobs' inputs

def job_items(name: str, written: dict[str, list[dict]], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    if name == "triage":
        items = inputs.labelled([(w["id"], w["text"]) for w in written["ticket"]], seed)
    elif name == "classify":
        from tinythink.eval.tasks import INTENTS

        items = inputs.labelled([(w["id"], w["text"]) for w in written["ticket"]], seed + 1)
        items += [{"id": ident, "text": text, "labels": INTENTS} for ident, text in inputs.dev_texts("intent",
                                                                                                    "Request: ")]
    elif name == "sentiment":
        items = [{"id": w["id"], "text": w["text"]} for w in written["review"]]
        items += [{"id": ident, "text": text} for ident, text in inputs.dev_texts("sentiment", "Text: ")]
    elif name == "keywords":
        items = [{"id": f"kw-{ident}", "text": text[:1500], "n": rng.choice([3, 5, 8])}
                 for ident, text in inputs.passages(n, seed)]
    elif name == "summary":
        items = [{"id": f"sum-{ident}", "text": text, "sentences": rng.choice([1, 2, 3])}
                 for ident, text in inputs.passages(n, seed + 2)]
        items += [{"id": ident, "text": text, "sentences": 1} for ident, text in inputs.dev_texts("summary", "sentence.")]
    elif name == "email":
        items = [{"id": w["id"], "text": w["text"], "tone": rng.choice(inputs.TONES), "facts": email_facts(rng)}
                 for w in written["email"]]
    elif name == "report":
        items = [{"id": w["id"], "notes": [line.lstrip("-• ").strip() for line in w["text"].splitlines()
                                           if line.strip()][:8], "title": f"weekly report on {w['topic']}"}
                 for w in written["notes"]]
    elif name == "faq":
        items = inputs.faq_items(n, seed)
    elif name == "chat":
        items = inputs.chat_items(n, seed)
    elif name == "refuse":  # fixed sets, taken whole
        return inputs.harmful_requests()
    elif name == "comply":
        return inputs.lookalikes()
    else:
        raise TinythinkError(f"unknown job {name!r} (known: {', '.join(JOBS)})")
    rng.shuffle(items)
    return items[:n]


def email_facts(rng: random.Random) -> list[str]:
    facts = [f"a refund of ${rng.randint(10, 400)} will arrive within {rng.randint(3, 10)} days",
             f"the replacement ships on March {rng.randint(2, 28)}",
             f"the case number is {rng.randint(10000, 99999)}",
             f"our support line is open until {rng.randint(5, 9)} pm",
             "the account has been unlocked", "a 20% discount code was added to the account"]
    return rng.sample(facts, 2)


# ---- accepting a teacher's samples

def accept_answer(job: Job, item: dict, replies: list[str], need: float) -> str | None:
    """The reply to keep, or None: schema jobs must parse, every job pass its check, and where the job has one
    right answer, `need` of the samples must agree on it (the kept reply is the shortest that does)."""
    def valid(r: str) -> bool:
        return (job.schema is None or _json(r) is not None) and job.check(item, r) and faq_ok(job, item, r)

    good = [r for r in replies if valid(r)]
    if job.key is not None:
        key = generate.agree([job.key(item, r) if valid(r) else None for r in replies], need)
        if key is None:
            return None
        good = [r for r in good if job.key(item, r) == key]
    return min(good, key=len) if good else None


def faq_ok(job: Job, item: dict, reply: str) -> bool:
    if job.name != "faq":
        return True
    unknown = reply.strip().lower().rstrip(".") == "i don't know"
    return unknown == (not item["answerable"])


class Teach:
    def __init__(self, settings: TeachSettings, progress: bool = True):
        self.s, self.progress = settings, progress
        self.out = Path(settings.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.sha = teacher_sha(settings.teacher)

    def provenance(self, item: dict, job: str, messages: list[dict], completion: str, settings: dict) -> dict:
        return {"id": item["id"], "job": job, "messages": messages, "completion": completion,
                "teacher": self.s.teacher, "teacher_sha256": self.sha, "settings": settings,
                "hash": generate.text_hash(json.dumps(messages) + completion)}

    def write(self, endpoint):
        """The teacher writes the inputs that no package holds: tickets, reviews, emails, notes."""
        writer = generate.Writer(self.out / "write.jsonl")
        counts = {"ticket": 2 * self.s.per_job, "review": self.s.per_job, "email": self.s.per_job,
                  "notes": self.s.per_job}
        prompts = [p for kind, n in counts.items() for p in inputs.writing_prompts(kind, n, self.s.seed)]

        def accept(item, replies):
            text = replies[0].strip()
            if not 40 < len(text) < 1500:
                return None
            return {"id": item["id"], "kind": item["kind"], "text": text, "topic": item["topic"],
                    "product": item["product"], "teacher_sha256": self.sha, "prompt": item["messages"],
                    "hash": generate.text_hash(text)}

        request = lambda item: {"messages": item["messages"], "temperature": 0.9, "max_completion_tokens": 200,
                                "seed": generate.seed_of(item["id"])}
        return generate.run(endpoint.client, endpoint.model, prompts, request, accept, writer, self.s.concurrency,
                            "writing inputs", self.progress)

    def written(self) -> dict[str, list[dict]]:
        rows = generate.kept(self.out / "write.jsonl")
        return {kind: [r for r in rows if r["kind"] == kind] for kind in ("ticket", "review", "email", "notes")}

    def answer(self, endpoint):
        writer = generate.Writer(self.out / "answers.jsonl")
        written = self.written()
        totals = {}
        for name in self.s.jobs:
            job = JOBS[name]
            items = job_items(name, written, self.s.per_job, self.s.seed)
            k = self.s.samples if job.key else 1
            settings = {"temperature": self.s.temperature if k > 1 else 0.0, "n": k, "max_tokens": job.max_tokens,
                        "response_format": job.response_format(items[0]) is not None if items else False,
                        **({"teacher_instruction": job.instruction} if job.instruction else {})}

            def request(item, job=job, k=k):
                fmt = job.response_format(item)
                return {"messages": job.teacher_messages(item), "n": k, "temperature": settings["temperature"],
                        "max_completion_tokens": job.max_tokens, "seed": generate.seed_of(item["id"]),
                        **({"response_format": fmt} if fmt else {})}

            def accept(item, replies, job=job):
                kept = accept_answer(job, item, replies, self.s.agreement)
                return None if kept is None else self.provenance(item, job.name, job.messages(item), kept, settings)

            pending = [{**i, "id": f"{name}/{i['id']}"} for i in items]  # one file for every job: ids say which
            totals[name] = generate.run(endpoint.client, endpoint.model, pending, request, accept, writer,
                                        self.s.concurrency, name, self.progress)
        return totals

    def reason(self, endpoint):
        writer = generate.Writer(self.out / "traces.jsonl")
        totals = {}
        for dataset in self.s.datasets:
            items = traces.problems(dataset, self.s.choice_problems if dataset in traces.CHOICE_TASKS
                                    else self.s.problems)
            limit = traces.CHOICE_TRACE_TOKENS if dataset in traces.CHOICE_TASKS else self.s.trace_tokens
            settings = {"temperature": self.s.temperature, "n": self.s.samples, "max_tokens": limit}

            def accept(item, replies, settings=settings):
                right = [r for r in replies if traces.correct(item, r)]
                if not right:
                    return None
                example = traces.thinking_example(item, min(right, key=len))  # short traces preferred
                row = self.provenance(item, "reasoning", example["messages"], example["completion"], settings)
                return {**row, "dataset": dataset, "correct_samples": len(right)}

            request = lambda item, limit=limit: {"messages": item["messages"], "n": self.s.samples,
                                                 "temperature": self.s.temperature, "max_completion_tokens": limit,
                                                 "seed": generate.seed_of(item["id"])}
            totals[dataset] = generate.run(endpoint.client, endpoint.model, items, request, accept, writer,
                                           self.s.concurrency, dataset, self.progress)
        return totals

    def dev(self):
        """The evaluation's dev examples with their annotated answers, in its prompt format."""
        writer = generate.Writer(self.out / "dev.jsonl")
        counts = Counter()
        for row in inputs.dev_answers(dict(self.s.dev_answers), self.s.seed):
            counts[row["job"]] += writer.write(
                {**row, "hash": generate.text_hash(json.dumps(row["messages"]) + row["completion"])})
        return dict(counts)

    def learnt(self) -> list[dict]:
        """Every row the student learns: the teacher's kept answers and traces, and the dev answers."""
        return [r for name in ("answers", "traces", "dev") for r in generate.kept(self.out / f"{name}.jsonl")]

    def train(self):
        """The student learns every kept row (completion tokens only) through a LoRA adapter."""
        import math

        import torch

        from tinythink.compress import lora
        from tinythink.compress.data import PackedData, chat_document, pack
        from tinythink.compress.objectives import LanguageModeling
        from tinythink.compress.trainer import TrainSettings, train
        from tinythink.model.load import load_model
        from tinythink.text.chat_template import ChatTemplate

        rows = self.learnt()
        if not rows:
            raise TinythinkError(f"{self.out}: nothing to learn yet (run the answer, reason or dev stages first)")
        student = load_model(self.s.student, torch.float32)
        tok = student.tokenizer
        template = ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token)
        docs = [chat_document(tok, template, r["messages"], r["completion"]) for r in rows]
        held = [d for i, d in enumerate(docs) if i % 25 == 0]
        data = PackedData(pack([d for i, d in enumerate(docs) if i % 25], self.s.seq_len, tok.token_id(tok.eos_token)))
        heldout = PackedData(pack(held, self.s.seq_len, tok.token_id(tok.eos_token)), split="heldout")
        model = lora.add_lora(student.model.float(), self.s.rank, self.s.alpha)
        steps = max(1, math.ceil(self.s.epochs * len(data) / 8))
        settings = TrainSettings(steps=steps, max_time=self.s.max_time, lr=self.s.lr, warmup_steps=min(20, steps),
                                 micro_batch=4, accumulate=2, eval_every=25, eval_batches=8, save_every=10)
        summary = train(model, LanguageModeling(), data, heldout, settings, self.out / "train", self.progress)
        lora.save_adapter(model, self.out / "adapter", self.s.student)
        summary = {**summary, "rows": len(rows), "sequences": len(data)}
        (self.out / "adapter" / "train.json").write_text(json.dumps(summary, indent=1, default=str))
        return summary

    def ship(self, dest: Path) -> dict:
        """The adapter as a model that ships: its two PEFT files, the rows it learnt (gzipped JSONL, provenance
        and all) and card.json (teacher, settings, rows per job, training summary, the adapter's sha256)."""
        import gzip
        import hashlib
        import shutil

        adapter = self.out / "adapter"
        if not (adapter / "adapter_model.safetensors").is_file():
            raise TinythinkError(f"{self.out}: no adapter to ship yet (run the train stage first)")
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(adapter / name, dest / name)
        rows = self.learnt()
        with gzip.open(dest / "training.jsonl.gz", "wt", compresslevel=9) as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        trained = adapter / "train.json"  # written with the adapter, so a later run's record cannot lose it
        jobs = Counter(r["job"] for r in rows)
        card = {"base": self.s.student, "teacher": Path(self.s.teacher).name, "teacher_sha256": self.sha,
                "settings": {k: v for k, v in asdict(self.s).items() if k not in ("teacher", "out", "teacher_endpoint")},
                "rows": jobs, "train": json.loads(trained.read_text()) if trained.is_file() else None,
                "adapter_sha256": hashlib.sha256((dest / "adapter_model.safetensors").read_bytes()).hexdigest()}
        (dest / "card.json").write_text(json.dumps(card, indent=1, default=str))
        return card

    @contextmanager
    def teacher(self):
        """The teacher's endpoint: loaded here and served on a free port, or the one it is served at (one teacher
        server can answer the teaching and its own evaluation at once, in the same batches)."""
        from tinythink.eval.run import Endpoint, local_endpoint

        if self.s.teacher_endpoint:
            endpoint = Endpoint(self.s.teacher_endpoint, "", concurrency=self.s.concurrency)
            endpoint.model = endpoint.client.models.list().data[0].id  # the model that server serves
            yield endpoint
        else:
            with local_endpoint(self.s.teacher, max_batch=self.s.concurrency, context=2048) as (endpoint, _):
                yield endpoint

    def run(self, stages=STAGES) -> dict:
        (self.out / "teach.json").write_text(json.dumps({**asdict(self.s), "teacher_sha256": self.sha}, indent=1))
        results = {}
        needs_teacher = [s for s in stages if s in ("write", "answer", "reason")]
        if needs_teacher:
            with self.teacher() as endpoint:
                for stage in needs_teacher:
                    print(f"[{stage}]", file=sys.stderr, flush=True)
                    results[stage] = dict(getattr(self, stage)(endpoint))
        if "dev" in stages:
            print("[dev]", file=sys.stderr, flush=True)
            results["dev"] = self.dev()
        if "train" in stages:
            print("[train]", file=sys.stderr, flush=True)
            results["train"] = self.train()
        (self.out / "record.json").write_text(json.dumps(results, indent=1, default=str))
        return results
