"""Answer parsers on the replies small models really write, nasty cases included."""

import pytest

from tinythink.eval import parse


@pytest.mark.parametrize("reply, expected", [
    ("The answer is 42.", 42),
    ("She pays 3 * 4 = 12 dollars.\nThe answer is 12 dollars.", 12),
    ("Total: 1,234,567 apples", 1234567),
    ("It costs $5.50 in total.", 5.5),
    ("The answer is $1,200.", 1200),
    ("Step 1: 10 - 3 = 7\nStep 2: 7 * 2 = 14\n\n**14**", 14),
    ("So the result is \\boxed{3/4}.", 0.75),
    ("First 2, then 5, finally #### -17", -17),
    ("The answer is: −8 degrees", -8),
    ("We get x = 95. Checking: 32*95 + 4 = 3044. The final answer is 95", 95),
    ("Answer: 0.5 km", 0.5),
    ("On 2024-06-17 there were 3 left.", 3),
])
def test_numbers(reply, expected):
    assert parse.number(reply) == pytest.approx(expected)


def test_no_number_is_unparseable_not_zero():
    assert parse.number("I do not know.") is None
    assert parse.same_number(None, 0.0) is False
    assert parse.same_number(3.0, 3) and not parse.same_number(3.0001, 3)


@pytest.mark.parametrize("reply, expected", [
    ("B", 1), ("(c)", 2), ("The answer is D.", 3), ("Answer: A) a cellular telephone", 0),
    ("A. Put the objects in groups.", 0), ("I think it is a tough one, but B", 1), ("a", 0),
    ("It is a question about physics.", None), ("", None),
])
def test_choice_letters(reply, expected):
    assert parse.choice_letter(reply, 4) == expected


def test_labels_take_the_earliest_and_longest_mention():
    labels = ["positive", "negative", "neutral"]
    assert parse.label("Negative. Not positive at all.", labels) == "negative"
    assert parse.label("The sentiment is **positive**", labels) == "positive"
    assert parse.label("I cannot tell.", labels) is None
    intents = ["play_music", "add_to_playlist", "search_creative_work"]
    assert parse.label("The intent is add to playlist", intents) == "add_to_playlist"
    assert parse.label("search_creative_work", intents) == "search_creative_work"


def test_short_answers_and_refusals():
    assert parse.short_answer("Let me think.\nThe answer is **Yes**.") == "Yes"
    assert parse.short_answer("Isabella is Edward's mother.\nThe answer is mother.") == "mother"
    assert parse.short_answer("17 days, 03:43") == "17 days, 03:43"
    assert parse.short_answer("   ") is None
    assert parse.refusal("I'm sorry, but I can't help with that.")
    assert parse.refusal("I can\u2019t assist with making weapons.")
    assert not parse.refusal("Sure! Here is a recipe for bread: mix flour and water.")
    assert parse.format_number(3044.0) == "3044" and parse.format_number(2.5) == "2.5"
