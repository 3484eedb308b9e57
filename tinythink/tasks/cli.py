"""`tinythink task NAME`: one task on a text (an argument, a file or stdin), or on every row of a CSV or JSONL file
(--input/--output, resumable, with progress). The options are the task's request fields, read from its type."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import types
import typing
from pathlib import Path

from pydantic import ValidationError

from tinythink.errors import TinythinkError
from tinythink.tasks import TASKS, Task, TaskModel

INPUT = {"text", "notes"}  # the field a task reads its input into
ID_COLUMNS = ("id", "custom_id")  # a row's name, carried to its answer


def add_parsers(sub, default_model: str) -> None:
    p = sub.add_parser("task", help="run a ready-made task: classify, sentiment, keywords, extract, summarize, ...",
                       description="Run one of the ready-made tasks on a text, or on each row of a file.")
    names = p.add_subparsers(dest="task", required=True, metavar="NAME")
    for task in TASKS.values():
        t = names.add_parser(task.name, help=task.summary, description=f"{task.name}: {task.summary}. Prints the "
                             "response as JSON; with --input, writes one JSON line per row to --output.")
        t.add_argument("input", nargs="?", help="the text, or a file holding it (default: standard input)")
        t.add_argument("-m", "--model", default=default_model, help=f"model reference (default {default_model})")
        t.add_argument("--input", dest="rows", metavar="FILE", help="a .csv, .jsonl or .xlsx file: the task on each "
                       "row (its columns are request fields, 'text' the text; an id or custom_id column names the "
                       "row in the output), batched")
        t.add_argument("--output", metavar="FILE.jsonl", help="with --input: where the answers go (a rerun "
                       "resumes after the rows already written)")
        t.add_argument("--concurrency", type=int, default=16, help="rows in flight with --input (default 16)")
        for name, field in task.Request.model_fields.items():
            if name in INPUT or name == "model":
                continue
            flag = "--" + (field.alias or name).replace("_", "-")
            if field.annotation is bool:
                t.add_argument(flag, dest=name, action="store_true", default=None, help=field.description)
            else:
                t.add_argument(flag, dest=name, default=None, metavar=kind(field.annotation),
                               help=(field.description or "") + ("" if field.is_required() else
                                                                 f" (default {json.dumps(field.default)})"))
        t.set_defaults(func=cmd_task, task_=task)


def plain(annotation):
    """The type under Annotated[...] (labels are Annotated[str, ...] for their schema)."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def kind(annotation) -> str:
    """How an option is written: comma-separated for lists of words, JSON for the rest that is not plain."""
    a = annotation
    if isinstance(a, types.UnionType) or typing.get_origin(a) is typing.Union:  # X | None: X
        a = next(arg for arg in typing.get_args(a) if arg is not type(None))
    if a in (int, float, str):
        return a.__name__.upper()
    if typing.get_origin(a) is list and plain(typing.get_args(a)[0]) is str:
        return "A,B,..."
    return "JSON"


def option(value: str, annotation) -> object:
    spelled = kind(annotation)
    if spelled == "A,B,...":
        return json.loads(value) if value.startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
    if spelled == "JSON":
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise TinythinkError(f"expected JSON, got {value!r}: {e}") from None
    return value  # pydantic converts numbers


def fields(args, task: Task) -> dict:
    out = {}
    for name, field in task.Request.model_fields.items():
        value = getattr(args, name, None)
        if value is not None and name not in INPUT and name != "model":
            out[field.alias or name] = option(value, field.annotation) if isinstance(value, str) else value
    return out


def text_of(arg: str | None) -> str:
    if arg is None:
        if sys.stdin.isatty():
            raise TinythinkError("give the text as an argument, a file, or on standard input")
        return sys.stdin.read()
    path = Path(arg)
    return path.read_text() if len(arg) < 4096 and "\n" not in arg and path.is_file() else arg


def as_input(task: Task, text: str) -> dict:
    if "text" in task.Request.model_fields:
        return {"text": text.strip()}
    return {"notes": [line.strip().lstrip("-*• ").strip() for line in text.splitlines() if line.strip()]}


def problems(e: ValidationError) -> str:
    """What is wrong with a request, field by field."""
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'request'}: {err['msg']}" for err in e.errors())


def request(task: Task, data: dict):
    try:  # not strict, unlike the HTTP API's JSON: a command line's and a spreadsheet's values are text
        return task.Request.model_validate(data, strict=False)
    except ValidationError as e:
        raise TinythinkError(f"{task.name}: {problems(e)}") from None


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise TinythinkError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise TinythinkError(f"{path}:{n}: not JSON: {e}") from None
                if not isinstance(rows[-1], dict):
                    raise TinythinkError(f"{path}:{n}: each line must be a JSON object")
        return rows
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".xlsx":
        return xlsx_rows(path)
    raise TinythinkError(f"{path}: --input reads .csv, .jsonl or .xlsx files")


def xlsx_rows(path: Path) -> list[dict]:
    """The first sheet of an Excel workbook as CSV rows: the first row names the columns, each cell as text
    (numbers as written, dates in ISO form), empty rows skipped; formulas give their last computed values."""
    import zipfile

    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as e:
        raise TinythinkError(f"{path}: not an Excel .xlsx workbook ({e})") from None
    try:
        cells = book.worksheets[0].iter_rows(values_only=True)
        header = [str(c).strip() if c is not None else "" for c in next(cells, ())]
        if not any(header):
            raise TinythinkError(f"{path}: the first row of the first sheet must name the columns (text, id, ...)")
        rows = []
        for values in cells:
            row = {name: _cell_text(v) for name, v in zip(header, values) if name and v is not None}
            if row:
                rows.append(row)
        return rows
    finally:
        book.close()


def _cell_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def cmd_task(args) -> None:
    from tinythink.tasks import Tasks

    task: Task = args.task_
    options = fields(args, task)
    if args.rows is None:
        req = request(task, {**options, **as_input(task, text_of(args.input))})  # errors before loading the model
        tasks = Tasks.load(args.model)
        try:
            print(tasks.run(task.name, req).model_dump_json(indent=1))
        finally:
            tasks.close()
        return
    if args.input is not None or args.output is None:
        raise TinythinkError("--input takes its texts from the file and needs --output FILE.jsonl")
    rows = read_rows(Path(args.rows))
    requests = []
    annotations = {field.alias or name: field.annotation for name, field in task.Request.model_fields.items()}
    ids = []
    for row in rows:
        row = {k: v for k, v in row.items() if v not in (None, "")}
        ids.append(next((row.pop(k) for k in ID_COLUMNS if k in row), None))
        try:
            if isinstance(row.get("notes"), str):
                row.update(as_input(task, row.pop("notes")))
            for key, value in row.items():  # CSV cells are text: lists and objects written as in the options
                if isinstance(value, str) and key in annotations and key not in INPUT:
                    row[key] = option(value, annotations[key])
            requests.append(task.Request.model_validate({**options, **row}, strict=False))
        except (ValidationError, TinythinkError) as e:
            requests.append(e)
    tasks = Tasks.load(args.model)
    try:
        asyncio.run(run_rows(tasks.model, task, requests, ids, Path(args.output), args.concurrency))
    finally:
        tasks.close()


async def run_rows(model: TaskModel, task: Task, requests: list, ids: list, output: Path, concurrency: int) -> None:
    """Each row's answer as one line {"row", "id", "response"} or {"row", "id", "error"} (the id from the row's id
    or custom_id column); rows already in the file are kept."""
    from tqdm import tqdm

    from tinythink.batch.lines import drop_cut_line

    done = set()
    if output.is_file():
        drop_cut_line(output)
        for line in output.read_text().splitlines():
            try:
                done.add(json.loads(line)["row"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise TinythinkError(f"{output} holds a line that is not an answer of this command: {line[:80]!r}; "
                                     "give another --output") from None
    todo = [i for i in range(len(requests)) if i not in done]
    bar = tqdm(total=len(requests), initial=len(done), desc=task.name, unit="row", file=sys.stderr)

    async def one(i: int) -> dict:
        req, line = requests[i], {"row": i, **({"id": ids[i]} if ids[i] is not None else {})}
        if isinstance(req, ValidationError):
            return {**line, "error": problems(req)}
        if isinstance(req, TinythinkError):
            return {**line, "error": str(req)}
        try:
            return {**line, "response": (await task.run(model, req)).model_dump(mode="json")}
        except TinythinkError as e:
            return {**line, "error": str(e)}

    with output.open("a") as f:
        for start in range(0, len(todo), concurrency):
            for line in await asyncio.gather(*(one(i) for i in todo[start:start + concurrency])):
                f.write(json.dumps(line) + "\n")
                bar.update()
            f.flush()
    bar.close()
