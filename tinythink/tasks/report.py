"""report: bullet notes (or a small table as text) into a short structured report: a one-line summary, then the
details; every number in the notes must reach the report (the response lists any that did not)."""

from __future__ import annotations

import re

from pydantic import Field

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.teach.jobs import report_messages


class ReportRequest(TaskRequest):
    notes: list[str] = Field(min_length=1, max_length=100, description="the notes, one per item (or table rows)")
    title: str = Field("status report", min_length=1, max_length=100, description="what kind of report")
    max_tokens: int = Field(300, ge=32, le=2048, description="the longest report, in tokens")


class ReportResponse(TaskResponse):
    report: str
    missing_numbers: list[str] = Field(description="numbers from the notes that the report leaves out")


async def run(model: TaskModel, r: ReportRequest) -> ReportResponse:
    report = (await model.write(report_messages({"notes": r.notes, "title": r.title}), r.max_tokens)).strip()
    numbers = dict.fromkeys(n for note in r.notes for n in re.findall(r"\d+(?:[.,]\d+)?", note))
    return ReportResponse(model=model.name, report=report, missing_numbers=[n for n in numbers if n not in report])


TASK = Task("report", "notes into a short report: a one-line summary, then the details", ReportRequest,
            ReportResponse, run)
