"""NATS subjects: valid tokens compose the documented subjects; anything that could widen a
subscription or break the protocol line is refused."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import subjects
from schemas.common import ID_PATTERN

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=100)

ids = st.from_regex(ID_PATTERN, fullmatch=True)

# Each builder with the placeholders of its row in the module's table.
BUILDERS: dict[str, tuple[Callable[..., str], tuple[str, ...]]] = {
    "telemetry": (subjects.telemetry, ("site", "machine")),
    "twin": (subjects.twin, ("machine",)),
    "anomaly": (subjects.anomaly, ("machine",)),
    "rul": (subjects.rul, ("machine",)),
    "workorder": (subjects.workorder, ("id",)),
    "dead_letter": (subjects.dead_letter, ("source",)),
    "edge_alert": (subjects.edge_alert, ("gateway", "machine")),
    "audit": (subjects.audit, ("action",)),
    "alert": (subjects.alert, ("alert_id",)),
    "notify_alert": (lambda: subjects.NOTIFY_ALERT, ()),
    "maintenance": (subjects.maintenance, ("operation",)),
}


def documented_subjects() -> list[str]:
    """The subject templates in the table of ``schemas.subjects``' docstring."""
    assert subjects.__doc__
    return re.findall(r"^``(tf\.[^`]+)``", subjects.__doc__, flags=re.MULTILINE)


def template_of(name: str) -> str:
    """The documented template a builder produces (its placeholders used as tokens)."""
    fn, placeholders = BUILDERS[name]
    plain = fn(*placeholders)  # e.g. "tf.telemetry.site.machine"
    (template,) = [t for t in documented_subjects() if re.sub(r"<(\w+)>", r"\1", t) == plain]
    return template


def test_the_table_documents_every_builder() -> None:
    templates = documented_subjects()
    assert len(templates) == len(BUILDERS) == len(set(templates))
    assert sorted(templates) == sorted(template_of(name) for name in BUILDERS)


@PROPERTY
@given(st.sampled_from(sorted(BUILDERS)), st.data())
def test_valid_tokens_compose_the_documented_subject(name: str, data: st.DataObject) -> None:
    fn, placeholders = BUILDERS[name]
    tokens = [data.draw(ids, label=p) for p in placeholders]
    template = template_of(name)
    expected = template
    for placeholder, token in zip(placeholders, tokens, strict=True):
        expected = expected.replace(f"<{placeholder}>", token, 1)
    subject = fn(*tokens)
    assert subject == expected
    # every token stays one token: the subject has as many parts as its template
    assert len(subject.split(".")) == len(template.split("."))
    assert not set(subject) & set("*> \t\r\n")


@PROPERTY
@given(ids, ids)
def test_telemetry_subjects_are_matched_by_the_wildcards(site: str, machine: str) -> None:
    subject = subjects.telemetry(site, machine)
    assert nats_match(subjects.TELEMETRY_ALL, subject)
    assert nats_match(subjects.telemetry_site(site), subject)
    assert nats_match(subjects.TWIN_ALL, subjects.twin(machine))
    assert nats_match(subjects.ANOMALY_ALL, subjects.anomaly(machine))
    assert nats_match(subjects.RUL_ALL, subjects.rul(machine))
    assert not nats_match(subjects.TWIN_ALL, subject)


def nats_match(pattern: str, subject: str) -> bool:
    """NATS wildcard semantics: ``*`` is one token, ``>`` one or more trailing tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def test_wildcard_constants() -> None:
    assert subjects.TELEMETRY_ALL == "tf.telemetry.>"
    assert subjects.TWIN_ALL == "tf.twin.*"
    assert subjects.ANOMALY_ALL == "tf.event.anomaly.*"
    assert subjects.RUL_ALL == "tf.event.rul.*"
    assert subjects.WORKORDER_ALL == "tf.event.workorder.*"
    assert subjects.telemetry_site("plant-a") == "tf.telemetry.plant-a.*"
    assert subjects.workorder("WO-2025-01-0089") == "tf.event.workorder.WO-2025-01-0089"


BAD_TOKENS = [
    "P.101",
    "*",
    ">",
    "P-*",
    "P>",
    "P 101",
    " P",
    "P-101\n",
    "P\r\n",
    "P\t1",
    "",
    "-P",
    "_P",
    "Pümpe",
    "x" * 65,
]


@pytest.mark.parametrize("bad", BAD_TOKENS)
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bad_tokens_are_refused_by_every_builder(name: str, bad: str) -> None:
    fn, placeholders = BUILDERS[name]
    if name == "maintenance" and bad == "P.101":
        # An operation is tokens joined by dots (workorders.create): each is checked.
        assert fn(bad) == "tf.maintenance.P.101"
        with pytest.raises(ValueError, match=r"operation '\*' is not a valid subject token"):
            fn("P.*")
        return
    for position in range(len(placeholders)):
        tokens = ["ok"] * len(placeholders)
        tokens[position] = bad
        with pytest.raises(ValueError, match=r"is not a valid subject token") as info:
            fn(*tokens)
        assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda: subjects.telemetry("plant a", "P-1"), "site"),
        (lambda: subjects.telemetry("plant-a", "P.1"), "machine"),
        (lambda: subjects.telemetry_site("*"), "site"),
        (lambda: subjects.workorder("WO 1"), "work order"),
        (lambda: subjects.dead_letter(">"), "source"),
    ],
)
def test_the_error_names_the_token_kind(call: Callable[[], str], kind: str) -> None:
    with pytest.raises(ValueError, match=rf"^{kind} '"):
        call()


def test_a_non_string_token_is_refused() -> None:
    with pytest.raises(ValueError, match="machine 101 is not a valid subject token"):
        subjects.twin(101)  # type: ignore[arg-type]
