"""The safety policy file: defaults merged under it, and each kind of mistake named in one clear error."""

import pytest

from tinythink.errors import TinythinkError
from tinythink.safety.guard import Verdict
from tinythink.safety.labels import TRAINED
from tinythink.safety.policy import load_policy


def verdict(language=None, **scores) -> Verdict:
    full = {label: scores.get(label.replace("/", "_").replace("-", "_"), 0.0) for label in TRAINED}
    return Verdict(full, {k: v >= 0.5 for k, v in full.items()}, language)


@pytest.mark.parametrize("text, message", [
    ("input: [1, 2]", "`input` must be a mapping"),
    ("input:\n  nonsense: block", "`input.nonsense` is not a label"),
    ("input:\n  harmful: destroy", "`input.harmful.action` is 'destroy'; one of block, flag, allow"),
    ("output:\n  harmful: {action: block, threshold: 2}", "threshold` must be a number in [0, 1]"),
    ("output:\n  harmful: {action: block, level: 2}", "must be an action or {action, threshold}"),
    ("stream_window_tokens: 0", "`stream_window_tokens` must be an integer in [1, 256]"),
    ("colour: blue", "unknown keys ['colour']"),
    ("input: {harmful: [block", "not valid YAML"),
    ("audit: {path: x, keep: true}", "`audit` must be a mapping with `path` and/or `text`"),
])
def test_each_mistake_in_a_policy_file_is_named(tmp_path, text, message):
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(TinythinkError, match=message.replace("[", r"\[").replace("{", r"\{").replace("(", r"\(")):
        load_policy(tmp_path / "policy.yaml")


def test_a_missing_policy_file_is_named(tmp_path):
    with pytest.raises(TinythinkError, match="cannot read the safety policy"):
        load_policy(tmp_path / "absent.yaml")


def test_the_defaults_block_harm_flag_injection_and_send_advice_for_review(tmp_path):
    policy = load_policy(data_dir=tmp_path)
    assert policy.audit_path == tmp_path / "safety-audit.jsonl" and not policy.audit_text
    blocked = policy.decide("input", verdict(harmful=0.9, violence=0.8))
    assert blocked.blocked and blocked.categories == ["violence"]
    advice = policy.decide("input", verdict(medical=0.9))
    assert advice.action == "flag" and advice.review == ["medical"] and not advice.categories
    injected = policy.decide("input", verdict(prompt_injection=0.9))
    assert injected.action == "flag" and injected.injection
    assert policy.decide("output", verdict(prompt_injection=0.9)).action == "allow"  # not checked on output
    assert policy.decide("input", verdict(harmful=0.2)).action == "allow"
    assert "medical" in policy.disclaimer(["medical"])


def test_a_files_rules_merge_over_the_defaults(tmp_path):
    (tmp_path / "policy.yaml").write_text("input:\n  sexual: flag\n  medical: allow\noutput:\n  hate: allow\n")
    policy = load_policy(tmp_path / "policy.yaml")
    flagged = policy.decide("input", verdict(harmful=0.9, sexual=0.9))
    assert flagged.action == "flag" and flagged.categories == ["sexual"]
    assert policy.decide("input", verdict(harmful=0.9, violence=0.9)).blocked  # harmful's default rule
    assert policy.decide("input", verdict(medical=0.9)).action == "allow"
    assert policy.decide("output", verdict(harmful=0.9, hate=0.9)).action == "allow"


def test_a_text_in_another_language_is_flagged_by_default_and_blocked_where_the_policy_says(tmp_path):
    default = load_policy().decide("input", verdict(language="de"))
    assert default.action == "flag" and default.language == "de" and not default.categories
    assert load_policy().decide("output", verdict(language="de")).action == "flag"
    assert load_policy().decide("input", verdict()).language is None
    (tmp_path / "p.yaml").write_text("input:\n  other_language: block\noutput:\n  other_language: allow\n")
    strict = load_policy(tmp_path / "p.yaml")
    assert strict.decide("input", verdict(language="de")).blocked
    allowed = strict.decide("output", verdict(language="de"))
    assert allowed.action == "allow" and allowed.language is None
