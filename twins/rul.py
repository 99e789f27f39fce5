"""What a twin needs from a remaining-useful-life model, and reading any model artifact.

Two models honour :class:`RulModel`: :class:`~twins.survival.SurvivalRulModel`
(cause-specific Weibull AFT: attributes each machine's risk to its failure modes) and
:class:`~twins.boosted.BoostedRulModel` (boosted health index with a Weibull around it:
the sharper median). Both return a :class:`~twins.survival.RulEstimate` and write a JSON
artifact whose ``format`` field says which it is.

>>> load_rul_model(b'{"format": "something/9"}')
Traceback (most recent call last):
...
ValueError: unknown RUL model artifact format 'something/9'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from twins.boosted import ARTIFACT_FORMAT as BOOSTED_FORMAT
from twins.boosted import BoostedRulModel
from twins.survival import ARTIFACT_FORMAT as AFT_FORMAT
from twins.survival import RulEstimate, SurvivalRulModel


class RulModel(Protocol):
    @property
    def features(self) -> list[str]: ...
    @property
    def modes_(self) -> Mapping[str, Any]: ...
    @property
    def version_(self) -> str: ...
    @property
    def n_rows_(self) -> int: ...
    @property
    def n_failures_(self) -> int: ...

    def predict(
        self,
        features: Sequence[float] | np.ndarray | Mapping[str, float],
        age: float | Mapping[str, float],
    ) -> RulEstimate: ...

    def to_bytes(self) -> bytes: ...


def load_rul_model(blob: bytes) -> SurvivalRulModel | BoostedRulModel:
    """The model an artifact holds, whichever kind (its version hash is checked)."""
    try:
        doc = json.loads(blob)
    except ValueError as exc:
        raise ValueError(f"not a RUL model artifact: {exc}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt == AFT_FORMAT:
        return SurvivalRulModel.from_bytes(blob)
    if fmt == BOOSTED_FORMAT:
        return BoostedRulModel.from_bytes(blob)
    raise ValueError(f"unknown RUL model artifact format {fmt!r}")
