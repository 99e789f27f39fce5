"""The first problem pydantic found in an input, as every refusal names it.

A refusal says where and what: ``field.path: message``. Every boundary (the API, the
stream intake, the maintenance service's requests) reports the first problem of a
``ValidationError`` that way, through :func:`first_problem`.

>>> from pydantic import BaseModel, ValidationError
>>> class Reading(BaseModel):
...     value: float
>>> class Batch(BaseModel):
...     readings: list[Reading]
>>> try:
...     Batch.model_validate({"readings": [{"value": "hot"}]})
... except ValidationError as e:
...     refused = e
>>> first_problem(refused)
('readings.0.value', 'Input should be a valid number, unable to parse string as a number')
>>> first_problem(refused, name=str.upper, skip={"readings"})
('0.VALUE', 'Input should be a valid number, unable to parse string as a number')
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any


def first_problem(
    exc: Any,
    *,
    name: Callable[[str], str] = str,
    skip: Collection[object] = (),
) -> tuple[str, str]:
    """``(where, message)`` of the first problem of ``exc`` (anything with pydantic's
    ``errors()``): its location's parts joined by ``.`` (each through ``name``, those in
    ``skip`` left out), and pydantic's message. ``("", "invalid input")`` without one."""
    problems = exc.errors()
    if not problems:
        return "", "invalid input"
    first = problems[0]
    where = ".".join(name(str(p)) for p in first.get("loc", ()) if p not in skip)
    return where, str(first.get("msg", "invalid input"))
