"""Every task through its Python call on the real default model: the answers keep their promises (a label from
the set with probabilities that sum to 1, keywords found in the text, summaries of the length asked), and the
label scores are the model's own likelihoods."""

import asyncio

import pytest
import torch
from pydantic import ValidationError

from tinythink.tasks import TASKS
from tinythink.tasks.classify import ClassifyRequest, chat

TICKET = "I was charged twice for my subscription this month and I need a refund for the second payment."
LABELS = ["billing", "technical", "shipping"]
NEWS = ("The new solar farm near Tucson will power 40,000 homes and cut carbon emissions by 12 percent, the utility "
        "said on Monday. Construction starts in April and is expected to take eighteen months.")


def test_label_scores_are_the_models_likelihood_of_each_whole_reply(tasks):
    model = tasks.model
    messages = chat(ClassifyRequest(text=TICKET, labels=LABELS))
    scored = asyncio.run(model.log_likelihoods(messages, LABELS))
    prompt = model.prompt(messages)
    lm = model.host.llm.model
    for label, score in zip(LABELS, scored):
        reply = model.tokenizer.encode(model.turn_end(messages, label), add_special_tokens=False)
        assert model.tokenizer.decode(reply, skip_special_tokens=False).startswith(label)
        with torch.no_grad():  # one plain forward over prompt and reply, no engine, no cache
            logits = lm(torch.tensor([prompt + reply]))[0, len(prompt) - 1:-1].float()
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(reply)[:, None]).sum().item()
        assert score == pytest.approx(expected, abs=0.05)  # the engine keeps keys and values in bfloat16


def test_classify_answers_one_label_with_probabilities_that_sum_to_one(tasks):
    r = tasks.classify(text=TICKET, labels=LABELS)
    assert set(r.probabilities) == set(LABELS)
    assert sum(r.probabilities.values()) == pytest.approx(1)
    assert r.label == max(r.probabilities, key=r.probabilities.get) and r.labels == [r.label]
    assert not r.abstained
    unsure = tasks.classify(text=TICKET, labels=LABELS, threshold=0.999)  # nothing is that sure: abstain
    assert unsure.abstained and unsure.label is None and unsure.labels == []
    none = tasks.classify(text=TICKET, labels=LABELS, allow_none=True)
    assert set(none.probabilities) == {*LABELS, "none"} and sum(none.probabilities.values()) == pytest.approx(1)


def test_classify_reads_the_text_the_descriptions_and_the_examples(tasks):
    base = tasks.classify(text=TICKET, labels=LABELS).probabilities
    other = tasks.classify(text="The parcel with my order never arrived.", labels=LABELS).probabilities
    described = tasks.classify(text=TICKET, labels=LABELS,
                               descriptions={"shipping": "deliveries, parcels and returns"}).probabilities
    shown = tasks.classify(text=TICKET, labels=LABELS, examples=[{"text": "Where is my parcel?",
                                                                   "label": "shipping"}]).probabilities
    for changed in (other, described, shown):
        assert max(abs(changed[k] - base[k]) for k in LABELS) > 1e-3


def test_multi_label_gives_each_label_its_own_probability(tasks):
    r = tasks.classify(text="The app crashes when I open my invoice.", labels=LABELS, multi_label=True)
    assert set(r.probabilities) == set(LABELS) and all(0 < p < 1 for p in r.probabilities.values())
    assert r.labels and r.label == r.labels[0]
    assert set(r.labels) == {k for k, p in r.probabilities.items() if p >= 0.5} or \
        r.labels == [max(r.probabilities, key=r.probabilities.get)]  # none reached 0.5: the likeliest
    strict = tasks.classify(text="The app crashes.", labels=LABELS, multi_label=True, allow_none=True, threshold=0.999)
    assert strict.labels == [] and strict.label is None


def test_sentiment_on_the_default_and_a_users_scale(tasks):
    r = tasks.sentiment(text="I absolutely loved this film; the acting was superb.")
    assert set(r.probabilities) == {"positive", "negative", "neutral"}
    assert sum(r.probabilities.values()) == pytest.approx(1) and r.sentiment == "positive"
    scale = ["very negative", "negative", "positive", "very positive"]
    five = tasks.sentiment(text="Terrible, it broke on the first day.", scale=scale)
    assert list(five.probabilities) == scale and five.sentiment in scale


def test_keywords_are_always_found_in_the_text(tasks):
    r = tasks.keywords(text=NEWS, n=4)
    assert len(r.keywords) == 4
    for k in r.keywords:
        assert k.lower() in NEWS.lower()
    assert len({k.lower() for k in r.keywords}) == 4
    for d in r.dropped:
        assert " ".join(d.lower().split()) not in " ".join(NEWS.lower().split())


def test_extract_answers_in_the_schema(tasks):
    schema = {"type": "object", "properties": {"invoice": {"type": "string"}, "company": {"type": "string"},
                                               "total": {"type": "number"}}}
    r = tasks.extract(text="Invoice 4471 from Acme Corp, due 2026-01-15, total $1,250.00.", schema=schema)
    assert set(r.data) == {"invoice", "company", "total"} and isinstance(r.data["total"], (int, float))
    assert "4471" in r.data["invoice"] and "Acme" in r.data["company"]


@pytest.mark.parametrize("length", [{"sentences": 1}, {"sentences": 2}, {"words": 12}])
def test_summaries_keep_the_length_asked(tasks, length):
    r = tasks.summarize(text=NEWS + " Local officials welcomed the plan, though some ranchers objected to the "
                                    "loss of grazing land.", **length)
    assert r.summary and r.words == len(r.summary.split())
    if "sentences" in length:
        assert 1 <= r.sentences <= length["sentences"]
    else:
        assert 1 <= r.words <= 12


def test_email_reply_report_and_triage(tasks):
    reply = tasks.email_reply(text="Hi, my order #5521 has not arrived yet. Can you check?", tone="apologetic",
                              facts=["order 5521 ships on Friday"], max_tokens=120)
    assert reply.reply and reply.missing_facts in ([], ["order 5521 ships on Friday"])
    if "5521" not in reply.reply:  # a fact's number is never left out unnoticed
        assert reply.missing_facts == ["order 5521 ships on Friday"]
    report = tasks.report(notes=["Sales up 12% in March", "2 new hires in support"], title="monthly report")
    assert report.report and set(report.missing_numbers) <= {"12", "2"}
    assert all(n not in report.report for n in report.missing_numbers)
    t = tasks.triage(text="I cannot log in since this morning and I have a client demo in an hour!",
                     teams=["frontline", "engineering"])
    for field, value in (("category", t.category), ("priority", t.priority), ("team", t.team)):
        p = t.probabilities[field]
        assert value == max(p, key=p.get) and sum(p.values()) == pytest.approx(1)
    assert t.rationale and "\n" not in t.rationale


def test_bad_requests_say_what_is_wrong():
    cases = [("classify", {"text": "x", "labels": ["a"]}, "at least 2"),
             ("classify", {"text": "x", "labels": ["a", "a"]}, "distinct"),
             ("classify", {"text": "x", "labels": ["a", "b"], "descriptions": {"c": "?"}}, "not among the labels"),
             ("classify", {"text": "x", "labels": ["a", "b"], "examples": [{"text": "y", "label": "c"}]}, "'c'"),
             ("classify", {"text": "x", "labels": ["a", "b"], "colour": "red"}, "Extra inputs"),
             ("summarize", {"text": "x", "sentences": 2, "words": 10}, "not both"),
             ("extract", {"text": "x", "schema": {"type": "string"}}, "type"),
             ("keywords", {"text": "x", "n": 0}, "greater than or equal to 1")]
    for name, body, message in cases:
        with pytest.raises(ValidationError, match=message):
            TASKS[name].Request.model_validate(body)


FAQ_PASSAGES = ["Refunds are paid back to the card you used within 5 business days of our approval.",
                "Orders ship from our warehouse in Leeds. Express delivery arrives the next working day.",
                "To reset your password, click Forgot password on the login page."]


def test_answers_cite_the_passage_about_the_question_or_say_they_do_not_know(tasks):
    r = tasks.answer(question="How many days do refunds take?", passages=FAQ_PASSAGES)
    assert r.citations[0].source == "passage 1" and r.citations[0].coverage == 1.0
    assert r.answered == (r.answer != "I don't know.")
    unknown = tasks.answer(question="Do you sell gift vouchers?", passages=FAQ_PASSAGES)
    assert (unknown.answered, unknown.answer, unknown.citations) == (False, "I don't know.", [])


def test_answers_from_a_directory_of_documents(tasks, tmp_path):
    from tinythink.retrieval.index import DocumentIndex
    from tinythink.tasks import TaskModel, Tasks

    (tmp_path / "shipping.md").write_text("# Shipping\n\n" + FAQ_PASSAGES[1])
    (tmp_path / "account.html").write_text(f"<p>{FAQ_PASSAGES[2]}</p>")
    with_docs = Tasks(TaskModel(tasks.model.host, DocumentIndex(tmp_path)))
    r = with_docs.answer(question="Where is your warehouse?")
    assert r.citations and r.citations[0].source == "shipping.md"
    assert with_docs.answer(question="What is the capital of Peru?").answered is False
    with pytest.raises(Exception, match="--docs"):
        tasks.answer(question="Where is your warehouse?")  # no passages and no documents
