"""`tinythink make`: a teacher -> a mini model, in stages that each write their output and a record under the
output directory: data -> prune -> distill -> quantize -> evaluate -> export. A rerun skips finished stages and
resumes the unfinished one (distillation from its last checkpoint); the directory ends as a model tinythink
serves (`tinythink serve -m DIR`), with its model card (README.md).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tinythink.errors import TinythinkError


@dataclass
class MakeSettings:
    teacher: str
    out: str
    student: str | None = None  # distill into this model instead of pruning the teacher
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    mlp: int | None = None
    layer_shapes: list[dict] | None = None  # [{"n_heads", "n_kv_heads", "intermediate_size"}, ...] per kept layer
    params: int | None = None  # a budget of parameters (all of them), searched over shapes
    ratio: float | None = None  # or of the teacher's non-embedding parameters
    layer_metric: str = "loss"
    data: str = "builtin"  # "builtin" (compress/corpus.py), or a .txt/.jsonl file
    seq_len: int = 512
    calibration: int = 256  # sequences for importance and GPTQ
    search_sequences: int = 16  # held-out sequences each candidate shape of a budget is scored on
    tokens: int | None = None  # distillation tokens
    max_time: float | None = None  # seconds of distillation (this run)
    lr: float = 2e-4
    micro_batch: int = 4
    accumulate: int = 4
    loss: str = "forward_kl"
    temperature: float = 1.0
    cache_top_k: int | None = None  # cache the teacher's top-k log-probs on disk instead of running it live
    on_policy: float | None = None  # this fraction of the batches: the student writes, the teacher scores (GKD)
    quantize: int | None = None
    method: str = "gptq"
    group_size: int | None = None  # int4 groups; None: the largest of 128, 64, 32 that divides every layer's inputs
    eval_suite: str = "light,reasoning"
    eval_limit: int | None = 50
    export: list[str] = field(default_factory=lambda: ["hf"])
    gguf_type: str = "q4_1"
    threads: int | None = None

    # settings a rerun may change without making another model
    RESUMABLE = ("max_time", "threads", "eval_limit", "eval_suite", "export", "gguf_type")

    def check(self):
        prune_target = any(getattr(self, k) is not None for k in ("layers", "hidden", "heads", "kv_heads", "mlp",
                                                                 "layer_shapes", "params", "ratio"))
        if self.student and prune_target:
            raise TinythinkError("give either --student or a pruning target, not both")
        if self.params is not None and self.ratio is not None:
            raise TinythinkError("give --params or --ratio, not both")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise TinythinkError("--ratio must lie between 0 and 1")
        if self.quantize not in (None, 4, 8) or self.method not in ("gptq", "rtn"):
            raise TinythinkError("--quantize takes 4 or 8, --method gptq or rtn")
        unknown = set(self.export) - {"hf", "gguf"}
        if unknown:
            raise TinythinkError(f"--export takes hf and/or gguf, not {', '.join(sorted(unknown))}")
        if self.seq_len < 16 or self.calibration < 1 or self.search_sequences < 1:
            raise TinythinkError("--seq-len must be at least 16, --calibration and --search-sequences at least 1")


def parse_count(text: str) -> int:
    """'70M', '0.5B', '1500000' -> a number."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMbB]?)\s*", text)
    if not m:
        raise TinythinkError(f"not a count: {text!r} (e.g. 70M, 0.5B)")
    return int(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()])


def parse_duration(text: str) -> float:
    """'2h', '30m', '90s', '1h30m' -> seconds."""
    parts = re.findall(r"([\d.]+)\s*([hms])", text.strip())
    if not parts or "".join(a + b for a, b in parts) != re.sub(r"\s", "", text):
        raise TinythinkError(f"not a duration: {text!r} (e.g. 2h, 45m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "k", "M", "G"):
        if n < 1000:
            return f"{n:.1f} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} T{unit}"


class Make:
    def __init__(self, settings: MakeSettings, progress: bool = True, command: str = "tinythink make ..."):
        settings.check()
        self.s, self.progress, self.command = settings, progress, command
        self.out = Path(settings.out)
        self._teacher = self._tokenizer = None

    # ---- bookkeeping

    def record_path(self, stage: str) -> Path:
        return self.out / stage / "record.json"

    def done(self, stage: str) -> dict | None:
        path = self.record_path(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def finish(self, stage: str, record: dict) -> dict:
        record = {"stage": stage, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **record}
        path = self.record_path(stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.rename(path)
        return record

    def log(self, message: str):
        if self.progress:
            print(message, file=sys.stderr, flush=True)

    def check_settings(self):
        """The directory's first run fixes what model it makes; a rerun may only change how long and how much."""
        file = self.out / "make.json"
        mine = asdict(self.s)
        if file.is_file():
            theirs = json.loads(file.read_text())
            changed = [k for k in mine if k not in MakeSettings.RESUMABLE and theirs.get(k) != mine[k]]
            if changed:
                raise TinythinkError(f"{self.out} was made with other settings ({', '.join(changed)}); "
                                     "use another --out, or the same settings to resume")
        self.out.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(mine, indent=1))

    # ---- models and data

    def teacher(self, dtype: torch.dtype = torch.float32):
        from tinythink.model.load import load_model

        if self._teacher is None or self._teacher.model.embed_tokens.weight.dtype != dtype:
            self.log(f"loading the teacher {self.s.teacher} ({str(dtype).removeprefix('torch.')})")
            self._teacher = None
            self._teacher = load_model(self.s.teacher, dtype)
            self._teacher.model.requires_grad_(False)
        return self._teacher

    def tokenizer(self):
        from tinythink.model.load import load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.s.teacher)
        return self._tokenizer

    def datasets(self):
        from tinythink.compress.data import PackedData

        return PackedData.load(self.out / "data" / "train.safetensors"), \
            PackedData.load(self.out / "data" / "heldout.safetensors")

    def calibration(self, data, count: int):
        return data.subset(data.indices(0, min(count, len(data))))

    # ---- stages

    def stage_data(self) -> dict:
        from tinythink.compress import corpus
        from tinythink.compress.data import PackedData, pack, read_documents
        from tinythink.text.chat_template import ChatTemplate

        tok = self.tokenizer()
        template = ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token)
        if self.s.data == "builtin":
            train_docs, held_docs = corpus.documents(tok, template)
            sources = {name: license for name, (_, license) in corpus.SOURCES.items()}
        else:
            docs = read_documents(Path(self.s.data), tok, template)
            held_docs, train_docs = docs[::50], [d for i, d in enumerate(docs) if i % 50]
            sources = {self.s.data: "the user's own data"}
        pad = tok.token_id(tok.eos_token) or 0
        train = PackedData(pack(train_docs, self.s.seq_len, pad), seed=0)
        held = PackedData(pack(held_docs, self.s.seq_len, pad), seed=0, split="heldout")
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        train.save(self.out / "data" / "train.safetensors")
        held.save(self.out / "data" / "heldout.safetensors")
        return {"sources": sources, "train_sequences": len(train), "heldout_sequences": len(held),
                "seq_len": self.s.seq_len, "train_tokens": len(train) * self.s.seq_len,
                "trained_tokens": int((train.labels != -100).sum())}

    def target(self):
        from tinythink.compress.prune import Target
        from tinythink.model.config import LayerShape

        shapes = [LayerShape(**s) for s in self.s.layer_shapes] if self.s.layer_shapes else None
        return Target(self.s.layers, self.s.hidden, self.s.heads, self.s.kv_heads, self.s.mlp, shapes,
                      self.s.layer_metric)

    def budget(self, config) -> tuple[int, bool] | None:
        from tinythink.compress.prune import parameters

        if self.s.params is not None:
            return self.s.params, True
        if self.s.ratio is not None:
            return int(parameters(config, embeddings=False) * self.s.ratio), False
        return None

    def stage_prune(self) -> dict:
        from tinythink.compress import prune, search
        from tinythink.compress.importance import Importance, lm_loss, measure

        teacher = self.teacher().model
        train, held = self.datasets()
        scoring = held.subset(list(range(min(self.s.search_sequences, len(held)))))
        scores_file = self.out / "prune" / "importance.safetensors"
        scores_file.parent.mkdir(parents=True, exist_ok=True)
        if scores_file.is_file():
            importance = Importance.load(scores_file)
        else:
            drop = held.subset(list(range(min(4, len(held)))))
            importance = measure(teacher, self.calibration(train, self.s.calibration), drop, progress=self.progress)
            importance.save(scores_file)
        record = {"calibration_tokens": importance.tokens, "teacher_loss": importance.base_loss,
                  "drop_loss": importance.drop_loss.tolist(), "block_influence": importance.block_influence.tolist()}
        target = self.target()
        budget = self.budget(teacher.config)
        if budget is not None:
            ranked = search.best_shape(teacher, importance, budget[0], scoring, budget[1], width_multiple(teacher.config),
                                       progress=self.progress)
            target = ranked[0].target
            record["candidates"] = [{"shape": c.target.describe(), "parameters": c.parameters, "loss": c.loss}
                                    for c in ranked]
        student = prune.apply(teacher, prune.plan(teacher.config, importance, target))
        self.save_model(student, self.out / "prune" / "model")
        record.update(shape=target.describe(), parameters=student.num_parameters(),
                      teacher_parameters=teacher.num_parameters(),
                      non_embedding=prune.parameters(student.config, False),
                      teacher_non_embedding=prune.parameters(teacher.config, False),
                      pruned_loss=lm_loss(student, scoring), teacher_scoring_loss=lm_loss(teacher, scoring))
        return record

    def student_start(self) -> Path:
        if self.s.student:
            from tinythink.model.registry import resolve

            return resolve(self.s.student)
        return self.out / "prune" / "model"

    def stage_distill(self) -> dict:
        from tinythink.compress.losses import divergence_named
        from tinythink.compress.objectives import Distill, OnPolicy
        from tinythink.compress.teacher_cache import TeacherCache
        from tinythink.compress.trainer import autocast_dtype, device, train
        from tinythink.model.load import load_model

        student = load_model(str(self.student_start())).model.float()
        # the teacher in the dtype it runs in, loaded once: a float32 copy first would stay in the process's
        # memory (a 1.5B teacher's 7 GB on top of the training state got a run killed for memory)
        teacher_dtype = autocast_dtype("auto", device()) or torch.float32
        teacher = self.teacher(teacher_dtype).model
        if student.config.vocab_size != teacher.config.vocab_size:
            raise TinythinkError("the student's vocabulary differs from the teacher's: logit distillation needs one "
                                 "vocabulary (for another tokenizer, train on the teacher's generations: tinythink teach)")
        student.train().requires_grad_(True)
        data, held = self.datasets()
        settings = self.train_settings(data)
        loss = divergence_named(self.s.loss, temperature=self.s.temperature)
        caches = None
        if self.s.cache_top_k:
            from tinythink.eval.fetch import sha256

            needed = data.subset(data.indices(0, (settings.steps or len(data)) * self.sequences_per_step()))
            caches = {}
            for name, part in (("train", needed), ("heldout", held)):
                cache = TeacherCache.create(self.out / "distill" / f"cache-{name}", part, self.s.cache_top_k,
                                            self.s.temperature, sha256(Path(str(self.teacher(teacher_dtype).path))))
                cache.fill(teacher, part, self.s.micro_batch, self.progress)
                caches[name] = cache
            data = needed
        objective = Distill(loss, teacher=teacher if caches is None else None, caches=caches)
        if self.s.on_policy:
            if caches:
                raise TinythinkError("--on-policy needs the live teacher: leave out --cache-top-k")
            objective = OnPolicy(objective, self.s.on_policy)
        summary = train(student, objective, data, held, settings, self.out / "distill", self.progress)
        if summary["status"] != "done" and self.s.tokens:  # a time limit on the way to --tokens: resumable
            raise Stopped(f"distillation stopped by --max-time at step {summary['step']} of "
                          f"{summary['total_steps']}; run the same command again to go on")
        # without --tokens, the time is the budget: when it is spent, distillation is done
        if int(os.environ.get("RANK", 0)) == 0:
            self.save_model(student, self.out / "distill" / "model")
        rows = [json.loads(line) for line in (self.out / "distill" / "train.jsonl").read_text().splitlines()]
        held_rows = [r for r in rows if "eval_loss" in r]
        return {**summary, "settings": asdict(settings), "teacher": "cached top-%d" % self.s.cache_top_k
                if caches else "live", "heldout": [{k: r[k] for k in ("tokens", "eval_loss", "eval_ce")}
                                                   for r in held_rows]}

    def sequences_per_step(self) -> int:
        """The global batch: every process's micro-batches (under torchrun, WORLD_SIZE processes)."""
        return self.s.micro_batch * self.s.accumulate * int(os.environ.get("WORLD_SIZE", 1))

    def train_settings(self, data):
        from tinythink.compress.trainer import TrainSettings

        steps = math.ceil(self.s.tokens / (self.sequences_per_step() * data.seq_len)) if self.s.tokens else None
        if steps is None and self.s.max_time is None:
            raise TinythinkError("say how long to distill: --tokens N or --max-time 2h")
        return TrainSettings(steps=steps, max_time=self.s.max_time, lr=self.s.lr, warmup_steps=min(20, steps or 20),
                             micro_batch=self.s.micro_batch, accumulate=self.s.accumulate, eval_every=25,
                             eval_batches=4, save_every=10, keep=2)

    def distilled(self) -> Path:
        return self.out / "distill" / "model"

    def stage_quantize(self) -> dict:
        from tinythink.compress import gptq
        from tinythink.model.load import load_model
        from tinythink.model.quantize import quantize_model

        model = load_model(str(self.distilled())).model.float()
        group = group_size_for(model.config, self.s.group_size)
        start = time.perf_counter()
        if self.s.method == "gptq":
            train, _ = self.datasets()
            gptq.quantize_model(model, self.calibration(train, min(self.s.calibration, 128)), self.s.quantize, group,
                                progress=self.progress)
        else:
            quantize_model(model, self.s.quantize, group)
        self.save_model(model, self.out / "quantize" / "model")
        return {"bits": self.s.quantize, "method": self.s.method, "group_size": group,
                "seconds": time.perf_counter() - start}

    def final(self) -> Path:
        return self.out / "quantize" / "model" if self.s.quantize else self.distilled()

    def stage_evaluate(self) -> dict:
        from tinythink.compress.importance import lm_loss
        from tinythink.engine import bench
        from tinythink.eval.evaluate import Target, evaluate
        from tinythink.model.load import load_model

        _, held = self.datasets()
        perplexity_data = held.subset(list(range(min(32, len(held)))))
        stages = {"teacher": self.s.teacher}
        if not self.s.student:
            stages["pruned"] = str(self.out / "prune" / "model")
        else:
            stages["student before"] = str(self.student_start())
        stages["distilled"] = str(self.distilled())
        if self.s.quantize:
            stages["quantized"] = str(self.final())
        table = {}
        threads = self.s.threads or torch.get_num_threads()
        for name, ref in stages.items():
            self.log(f"measuring {name}: held-out perplexity, speed and memory")
            model = load_model(ref).model
            entry = {"model": ref, "parameters": model.num_parameters(),
                     "perplexity": math.exp(lm_loss(model, perplexity_data))}
            del model
            speed = bench.run(ref, ["float32"], threads, [128], [1, 8], 32, tickets=0, progress=lambda m: None)[0]
            table[name] = {**entry, "decode_tok_s": speed["decode_tok_s"], "prefill_tok_s": speed["prefill_tok_s"]["128"],
                           "streams8_tok_s": speed["streams"]["8"]["tok_s"], "peak_rss_mb": speed["peak_rss_mb"]}
        results = evaluate(Target(str(self.final())), Target(self.s.teacher), self.s.eval_suite, self.s.eval_limit,
                           None, self.out / "evaluate", command=f"tinythink make (evaluate stage of {self.out})")
        tasks = {name: {"model": r["model"]["score"], "reference": r["reference"]["score"],
                        "retention": r["retention"]} for name, r in results["tasks"].items()}
        return {"stages": table, "aggregates": results.get("aggregates", {}), "tasks": tasks,
                "suite": self.s.eval_suite, "limit": self.s.eval_limit}

    def stage_export(self) -> dict:
        from tinythink.compress import export_gguf
        from tinythink.model.load import load_model

        files = {}
        final = self.final()
        for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"):
            shutil.copy2(final / name, self.out / name)  # the directory itself is the model
            files[name] = (self.out / name).stat().st_size
        if "gguf" in self.s.export:
            loaded = load_model(str(final))
            path = self.out / "export" / f"{self.out.name}-{self.s.gguf_type}.gguf"
            export_gguf.write(loaded.model, loaded.tokenizer, path, self.s.gguf_type, name=self.out.name,
                              progress=self.progress)
            files[str(path.relative_to(self.out))] = path.stat().st_size
        return {"files": files}

    # ---- the whole run

    def save_model(self, model, path: Path):
        from tinythink.model.hf_checkpoint import save_hf_dir

        tok = self.tokenizer()
        bos = tok.token_id(tok.bos_token) if tok.bos_token else None
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_hf_dir(model, tmp, bos, sorted(tok.stop_ids))
        tok.save_hf(tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)

    def stages(self) -> list[str]:
        todo = ["data"] + (["prune"] if not self.s.student else []) + ["distill"]
        todo += ["quantize"] if self.s.quantize else []
        return todo + ["evaluate", "export"]

    def run(self) -> dict:
        """Every stage not done yet. Under torchrun, distillation runs on every process and the other stages on
        the first, the rest waiting for it."""
        from tinythink.compress import card
        from tinythink.compress.trainer import Distributed

        dist = Distributed()
        self.progress = self.progress and dist.main
        if dist.main:
            self.check_settings()
        dist.barrier()
        records = {}
        for stage in self.stages():
            found = self.done(stage)
            if found is not None:
                self.log(f"[{stage}] done already ({found['finished']}): skipped")
                records[stage] = found
                continue
            if stage != "distill" and not dist.main:
                dist.barrier()  # the first process runs it
                records[stage] = self.done(stage)
                continue
            self.log(f"[{stage}]")
            start = time.perf_counter()
            record = getattr(self, f"stage_{stage}")()
            record["stage_seconds"] = time.perf_counter() - start
            if dist.main:
                records[stage] = self.finish(stage, record)
            dist.barrier()
            records[stage] = self.done(stage)
        if dist.main:
            (self.out / "README.md").write_text(card.model_card(self.s, records, self.command))
        dist.barrier()
        return records


def input_widths(config) -> set[int]:
    """The input widths of a model's linear layers (an int4 group size must divide each)."""
    return {config.dim} | {config.layer(i).n_heads * config.head_dim for i in range(config.n_layers)} | \
        {config.layer(i).intermediate_size for i in range(config.n_layers)}


def width_multiple(config) -> int:
    """The multiple a searched shape's widths keep: 128 where the teacher's are all multiples of it (so GPTQ's
    groups of 128 fit the student too), else 32."""
    return 128 if all(w % 128 == 0 for w in input_widths(config)) else 32


def group_size_for(config, asked: int | None) -> int:
    if asked is not None:
        return asked
    for g in (128, 64, 32):
        if all(w % g == 0 for w in input_widths(config)):
            return g
    raise TinythinkError(f"no int4 group size of 32, 64 or 128 divides this model's widths {sorted(input_widths(config))}")


def model_config(ref: str):
    """A model's configuration without loading its weights."""
    from tinythink.model.gguf_file import GGUFFile
    from tinythink.model.hf_checkpoint import config_from_hf, load_state_dict
    from tinythink.model.registry import resolve

    path = resolve(ref)
    return config_from_hf(path, load_state_dict(path)) if path.is_dir() else GGUFFile(path).config()


def _zeros_model(config):
    """A model of this shape with zero weights (calloc'd, instant): for timing, not for answers."""
    from tinythink.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.zero_()
    return model


def decode_speed(config, quantize: int | None, group_size: int, steps: int = 16) -> float:
    """Tokens a second of single-stream decoding of this shape, as the engine serves it."""
    from tinythink.model.inference import prepare_for_inference
    from tinythink.model.quantize import quantize_model, run_rest_in

    model = _zeros_model(config)
    if quantize:
        quantize_model(model, quantize, group_size)
        from tinythink.model.load import quantized_rest_dtype

        run_rest_in(model, quantized_rest_dtype())
    prepare_for_inference(model)
    with torch.inference_mode():
        model.setup_caches(1, steps + 40)
        model(torch.zeros(1, 32, dtype=torch.long), input_pos=torch.arange(32), last_only=True)
        start = time.perf_counter()
        for i in range(steps):
            model(torch.zeros(1, 1, dtype=torch.long), input_pos=torch.tensor([32 + i]))
        return steps / (time.perf_counter() - start)


def step_seconds(student_config, teacher_config, s: MakeSettings, live_teacher: bool) -> float:
    """Seconds of one distillation step (forward and backward of every micro-batch, and the teacher's forward)."""
    from tinythink.compress.losses import divergence_named
    from tinythink.compress.trainer import autocast_dtype, device

    amp = autocast_dtype("auto", device())
    student = _zeros_model(student_config).train()
    tokens = torch.zeros(s.micro_batch, s.seq_len, dtype=torch.long)
    documents = torch.zeros_like(tokens)
    loss_fn = divergence_named(s.loss)
    teacher = _zeros_model(teacher_config).to(amp or torch.float32) if live_teacher else None
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=amp) if amp else torch.enable_grad():
        logits = student.logits(student.hidden(tokens, documents))
        with torch.no_grad():
            target = teacher.logits(teacher.hidden(tokens, documents)) if teacher is not None else logits.detach()
        loss_fn(logits, target, tokens).backward()
    return (time.perf_counter() - start) * s.accumulate


def dry_run(s: MakeSettings) -> str:
    """The plan, without running it: shapes, sizes, predicted speed, and the time a measured step implies."""
    from tinythink.compress import prune, search
    from tinythink.compress.prune import Target
    from tinythink.model.config import LayerShape

    s.check()
    teacher = model_config(s.teacher)
    lines = [f"tinythink make plan: {s.teacher} -> {s.out}", "",
             f"teacher: {teacher.n_layers} layers, hidden {teacher.dim}, {teacher.n_heads}/{teacher.n_kv_heads} heads, "
             f"MLP {teacher.intermediate_size}: {prune.parameters(teacher) / 1e6:.1f} M parameters "
             f"({prune.parameters(teacher, False) / 1e6:.1f} M without embeddings)"]
    if s.student:
        student = model_config(s.student)
        lines.append(f"student: {s.student}")
    else:
        budget = Make(s, progress=False).budget(teacher)
        if budget is not None:
            found = search.candidates(teacher, budget[0], budget[1], width_multiple(teacher))
            lines.append(f"budget: {budget[0] / 1e6:.1f} M {'parameters' if budget[1] else 'non-embedding parameters'}; "
                         f"{len(found)} candidate shapes, the prune stage picks the one with the lowest held-out loss:")
            lines += [f"  {c.target.describe()}: {c.parameters / 1e6:.1f} M" for c in found]
            student = search.shape_config(teacher, found[0].target)
            lines.append("(sizes and speeds below are for the first candidate)")
        else:
            shapes = [LayerShape(**x) for x in s.layer_shapes] if s.layer_shapes else None
            student = prune.shape_of(teacher, Target(s.layers, s.hidden, s.heads, s.kv_heads, s.mlp, shapes))
    params = prune.parameters(student)
    linear = prune.parameters(student, False) - student.dim * (2 * student.n_layers + 1)  # less the norms
    lines.append(f"student shape: {student.n_layers} layers, hidden {student.dim}, "
                 f"{student.n_heads}/{student.n_kv_heads} heads, MLP {student.intermediate_size}"
                 + ("" if student.uniform else " (per-layer shapes)")
                 + f": {params / 1e6:.1f} M parameters ({params / prune.parameters(teacher):.0%} of the teacher's), "
                 f"{prune.parameters(student, False) / 1e6:.1f} M without embeddings "
                 f"({prune.parameters(student, False) / prune.parameters(teacher, False):.0%})")
    sizes = [("float32", params * 4), ("bfloat16", params * 2)]
    if s.quantize:
        sizes.append((f"int{s.quantize}", (params - linear) * 2 + linear * s.quantize // 8))
    lines.append("bytes on disk / weights in memory: " + ", ".join(f"{k} {_human(v)}" for k, v in sizes))
    lines.append("")
    torch.set_num_threads(s.threads or torch.get_num_threads())
    t_speed = decode_speed(teacher, None, 32)
    st_speed = decode_speed(student, None, 32)
    lines.append(f"decode, one stream (zero weights of each shape, measured now): teacher float32 {t_speed:.1f} tok/s, "
                 f"student float32 {st_speed:.1f} tok/s ({st_speed / t_speed:.2f}x)")
    if s.quantize:
        q_speed = decode_speed(student, s.quantize, group_size_for(student, s.group_size))
        lines.append(f"student int{s.quantize}: {q_speed:.1f} tok/s ({q_speed / t_speed:.2f}x the teacher's float32)")
    step = step_seconds(student, teacher, s, live_teacher=not s.cache_top_k)
    per_step = s.micro_batch * s.accumulate * s.seq_len
    lines.append(f"one distillation step ({per_step:,} tokens: {s.micro_batch} x {s.seq_len} x {s.accumulate}), "
                 f"measured now: {step:.1f} s ({per_step / step:.0f} tokens/s)")
    if s.tokens:
        steps = math.ceil(s.tokens / per_step)
        lines.append(f"--tokens {s.tokens:,}: {steps} steps, about {steps * step / 3600:.1f} h of distillation")
    if s.max_time:
        lines.append(f"--max-time {s.max_time / 3600:.2f} h: about {int(s.max_time / step) * per_step:,} tokens")
    lines.append("")
    lines.append("stages: " + " -> ".join(Make(s, progress=False).stages()))
    return "\n".join(lines)


class Stopped(TinythinkError):
    """A stage stopped cleanly before its end (--max-time); rerunning resumes it."""
