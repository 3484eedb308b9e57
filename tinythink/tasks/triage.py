"""triage: a support ticket to a category (yours), a priority and optionally a team, each with its probabilities
(scored as classify scores labels, all in one batch), and a one-line rationale written by the model."""

from __future__ import annotations

import asyncio

from pydantic import Field, model_validator

from tinythink.tasks.base import Task, TaskRequest, TaskResponse
from tinythink.tasks.model import TaskModel
from tinythink.tasks.prompts import Label, check_labels, label_list, labels_field, user
from tinythink.teach.jobs import PRIORITIES, TICKET_CATEGORIES as CATEGORIES


class TriageRequest(TaskRequest):
    text: str = Field(min_length=1, description="the ticket")
    categories: list[Label] = labels_field(CATEGORIES, min_length=2, max_length=50,
                                            description="your categories")
    descriptions: dict[str, str] = Field({}, description="what a category means")
    priorities: list[Label] = labels_field(PRIORITIES, min_length=2, max_length=10,
                                            description="lowest to highest")
    teams: list[Label] | None = labels_field(None, min_length=2, max_length=50,
                                                 description="teams to route to, if any")

    @model_validator(mode="after")
    def known(self):
        check_labels(self.categories, self.descriptions, "categories")
        check_labels(self.priorities, {}, "priorities")
        if self.teams is not None:
            check_labels(self.teams, {}, "teams")
        return self


class TriageResponse(TaskResponse):
    category: str
    priority: str
    team: str | None = Field(description="the team, when teams were given")
    rationale: str = Field(description="one line on why")
    probabilities: dict[str, dict[str, float]] = Field(description="for category, priority (and team): each "
                                                       "option's probability, summing to 1")


def ticket(r: TriageRequest, question: str) -> list[dict]:
    return user(f"Support ticket: {r.text}\n\n{question}")


async def run(model: TaskModel, r: TriageRequest) -> TriageResponse:
    asks = {"category": (f"Which category fits this ticket best?\n{label_list(r.categories, r.descriptions)}\n\n"
                         "Answer with the category only.", r.categories),
            "priority": (f"How urgent is this ticket? Priorities: {', '.join(r.priorities)}.\n\nAnswer with the "
                         "priority only.", r.priorities)}
    if r.teams:
        asks["team"] = (f"Which team should handle this ticket? Teams: {', '.join(r.teams)}.\n\nAnswer with the "
                        "team only.", r.teams)
    scored = await asyncio.gather(*(model.probabilities(ticket(r, q), options) for q, options in asks.values()))
    probabilities = {name: dict(zip(options, p)) for (name, (_, options)), p in zip(asks.items(), scored)}
    best = {name: max(p, key=p.get) for name, p in probabilities.items()}
    why = await model.write(ticket(r, f"This ticket is {best['category']} with {best['priority']} priority. In one "
                                      "short sentence, say why."), 48)
    rationale = next((line.strip() for line in why.splitlines() if line.strip()), "")
    return TriageResponse(model=model.name, category=best["category"], priority=best["priority"],
                          team=best.get("team"), rationale=rationale, probabilities=probabilities)


TASK = Task("triage", "a support ticket to a category, priority and team, with probabilities and a rationale",
            TriageRequest, TriageResponse, run)
