"""Remaining useful life as a survival distribution: cause-specific Weibull AFT models
of the *remaining* life, fitted on landmarks.

A landmark is an observation of a machine at age ``a`` that was still running then: its
condition features ``x(a)``, and how long it went on to run, ``R = T - a`` (to failure,
or to the end of observation: censored). Each failure mode ``m`` has a Weibull
accelerated-failure-time model of ``R`` given the features and the age (fitted with
lifelines' ``WeibullAFTFitter``)::

    S_m(h | x, a) = exp(-(h / lambda_m) ** rho_m),
    log lambda_m = b_m + beta_m . z(x) + gamma_m * z(a)

where ``z`` standardises with the training mean and spread. This *is* conditional
survival, the distribution of ``T - a`` given ``T > a``, estimated directly (the
landmarking approach) rather than derived from a model of the whole lifetime with
lifelines' ``conditional_after``: with features that change as a machine wears, it ranks
machines by imminent failure much better (AUC of P(fail within 7 days) on held-out
simulated lives, same features: 0.96-0.97 against 0.90-0.94 for a whole-life AFT
conditioned on age; measured while choosing, see README).

Failure modes compete (the first to occur ends the life), so the machine's survival is
``S(h) = prod_m S_m(h)``; each mode's model is fitted with the other modes' failures as
censoring. Age is per mode at prediction: a repaired component starts again at 0.

The median and the bounds of the central interval (5th and 95th percentiles for 90 %)
are read off ``S``; the probability of failing within ``h`` hours is ``1 - S(h)``.
Prediction is closed-form numpy (checked against lifelines in the tests), cheap enough
to run in every twin. Time units are whatever the training durations are in (hours for
the plant, cycles for C-MAPSS).

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> load = rng.uniform(0.5, 1.5, 300)
>>> life = 1000 * np.exp(-0.8 * (load - 1)) * rng.weibull(3.0, 300)
>>> age = rng.uniform(0, 0.9, 300) * life  # landmarks somewhere in each life
>>> frame = pd.DataFrame({"load": load, "entry": age, "duration": life, "event": True,
...                       "mode": "bearing_wear"})
>>> model = SurvivalRulModel(features=["load"]).fit(frame)
>>> heavy, light = model.predict([1.4], age=100.0), model.predict([0.6], age=100.0)
>>> heavy.median < light.median
True
>>> model.predict([1.0], age=800.0).median < model.predict([1.0], age=100.0).median
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from schemas.rul import FAILURE_HORIZONS_H
from twins.drift import DriftReference

ARTIFACT_FORMAT = "twinfleet.survival/2"
_LN_1000 = math.log(1000.0)


@dataclass(frozen=True)
class RulEstimate:
    """One machine's remaining-life distribution (times in the model's units)."""

    median: float
    lower: float
    upper: float
    confidence: float
    curve_hours: np.ndarray
    curve_survival: np.ndarray
    failure_probability: dict[int, float]
    failure_mode: str | None
    mode_probability: dict[str, float]
    factors: list[tuple[str, float, float, float | None]] = field(default_factory=list)
    """(feature, importance 0..1, current value, value that alone would halve the life)"""


@dataclass(frozen=True)
class _ModeModel:
    intercept: float
    coef: np.ndarray  # per standardised feature
    rho: float


class SurvivalRulModel:
    """Cause-specific Weibull AFT survival model for remaining useful life.

    Parameters
    ----------
    features: names of the condition features, in the order ``predict`` receives them.
    penalizer: L2 penalty passed to lifelines (keeps coefficients sane on small fleets).
    confidence: width of the central interval reported (0.9: 5th to 95th percentile).
    horizons: hours at which the failure probability is reported.
    name: prefix of the model version string.
    """

    def __init__(
        self,
        features: Sequence[str],
        penalizer: float = 0.01,
        confidence: float = 0.9,
        horizons: Sequence[int] = FAILURE_HORIZONS_H,
        name: str = "weibull-aft",
    ) -> None:
        check_model_arguments(features, confidence, horizons)
        if penalizer < 0:
            raise ValueError(f"penalizer must be >= 0, got {penalizer}")
        self.features = list(features)
        self.penalizer = float(penalizer)
        self.confidence = float(confidence)
        self.horizons = tuple(int(h) for h in horizons)
        self.name = name
        self.drift_reference_: DriftReference | None = None
        """The training data's drift reference (:mod:`twins.drift`), when it was captured
        (:func:`twins.training.train_rul_model`); None: no drift reference."""

    # -- fitting -------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> SurvivalRulModel:
        """Fit on landmark rows with columns ``entry`` (age at the landmark), ``duration``
        (age at failure or at the end of observation), ``event``, ``mode`` (the failure
        mode where ``event`` is true) and the feature columns."""
        from lifelines import WeibullAFTFitter

        missing = [
            c for c in ("entry", "duration", "event", "mode", *self.features) if c not in frame
        ]
        if missing:
            raise ValueError(f"frame is missing columns: {missing}")
        if len(frame) < 10:
            raise ValueError(f"frame needs at least 10 rows to fit, got {len(frame)}")
        x = frame[self.features].to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            finite = np.isfinite(x).all(axis=0)
            bad = [f for f, ok in zip(self.features, finite, strict=True) if not ok]
            raise ValueError(f"features contain NaN or infinite values: {bad}")
        duration = frame["duration"].to_numpy(dtype=np.float64)
        entry = frame["entry"].to_numpy(dtype=np.float64)
        if (duration <= 0).any() or (entry < 0).any() or (entry >= duration).any():
            raise ValueError("rows need 0 <= entry < duration and duration > 0")
        event = frame["event"].to_numpy(dtype=bool)
        modes = sorted({str(m) for m in frame.loc[event, "mode"]})
        if not modes:
            raise ValueError("frame has no failures (event) to learn from")
        covariates = np.column_stack([x, entry])  # the features, then the age
        mean = covariates.mean(axis=0)
        spread = covariates.std(axis=0)
        varying = spread > 1e-12 * np.maximum(np.abs(mean), 1.0)  # constants carry nothing
        scale = np.where(varying, spread, 1.0)
        z = (covariates - mean) / scale
        cols = [f"z{i}" for i in np.flatnonzero(varying)]
        base = pd.DataFrame(z[:, varying], columns=cols)
        base["remaining"] = duration - entry
        models: dict[str, _ModeModel] = {}
        for mode in modes:
            data = base.copy()
            data["event"] = (event & (frame["mode"].astype(str).to_numpy() == mode)).astype(int)
            fitter = WeibullAFTFitter(penalizer=self.penalizer)
            fitter.fit(data, duration_col="remaining", event_col="event")
            params = fitter.params_
            models[mode] = _ModeModel(
                intercept=float(params[("lambda_", "Intercept")]),
                coef=np.array(
                    [
                        float(params[("lambda_", f"z{i}")]) if used else 0.0
                        for i, used in enumerate(varying)
                    ]
                ),
                rho=float(np.exp(params[("rho_", "Intercept")])),
            )
        self.feature_mean_ = mean
        self.feature_scale_ = scale
        # The features' range in training (not the age): a linear model extrapolates
        # without bound, so a feature beyond anything a training life showed (a sensor
        # fault, a drifting gauge) is read at the edge of that range.
        self.feature_low_ = x.min(axis=0)
        self.feature_high_ = x.max(axis=0)
        self.modes_ = models
        self.n_rows_ = len(frame)
        # Landmark rows repeat a life; count failed lives where the frame names its units.
        self.n_failures_ = (
            int(frame.loc[event, "unit"].nunique()) if "unit" in frame else int(event.sum())
        )
        self.version_ = self._version()
        return self

    def _version(self) -> str:
        return artifact_version(self.name, self._params())

    @property
    def fitted(self) -> bool:
        return hasattr(self, "modes_")

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("the model is not fitted yet: call fit() or load an artifact")

    # -- prediction ----------------------------------------------------------------------
    def predict(
        self,
        features: Sequence[float] | np.ndarray | Mapping[str, float],
        age: float | Mapping[str, float],
    ) -> RulEstimate:
        """Remaining-life distribution of a machine of ``age`` with these features.

        ``age`` may be given per failure mode (a repaired component starts again at 0);
        modes not named take the largest age given.
        """
        self._require_fitted()
        x = feature_vector(features, self.features)
        ages = _ages(age, list(self.modes_))
        z = {m: self._z(x, ages[m]) for m in self.modes_}
        lam = {m: math.exp(mm.intercept + float(mm.coef @ z[m])) for m, mm in self.modes_.items()}
        rho = {m: mm.rho for m, mm in self.modes_.items()}
        # Horizon where survival falls to 0.001 under the fastest mode.
        hmax = max(min(lam[m] * _LN_1000 ** (1 / rho[m]) for m in lam), 1e-6)
        grid = np.linspace(0.0, hmax, 512)
        cum = {m: (grid / lam[m]) ** rho[m] for m in lam}
        total = sum(cum.values())
        surv = np.exp(-total)
        tail = (1 - self.confidence) / 2
        median = _quantile(grid, surv, 0.5)
        lower = _quantile(grid, surv, 1 - tail)
        upper = _quantile(grid, surv, tail)
        probs = {}
        for h in self.horizons:
            probs[h] = float(1 - math.exp(-sum((h / lam[m]) ** rho[m] for m in lam)))
        at_median = int(np.searchsorted(grid, median))
        shares = {m: float(cum[m][at_median]) for m in lam}
        norm = sum(shares.values()) or 1.0
        mode_probability = {m: v / norm for m, v in shares.items()}
        mode = max(mode_probability, key=mode_probability.__getitem__)
        curve_h = np.linspace(0.0, max(upper * 1.25, 1e-6), 25)
        curve_s = np.interp(curve_h, grid, surv, right=float(surv[-1]))
        return RulEstimate(
            median=median,
            lower=lower,
            upper=upper,
            confidence=self.confidence,
            curve_hours=curve_h,
            curve_survival=curve_s,
            failure_probability=probs,
            failure_mode=mode,
            mode_probability=mode_probability,
            factors=self._factors(z[mode], np.append(x, ages[mode]), mode),
        )

    def _z(self, x: np.ndarray, age: float) -> np.ndarray:
        low = getattr(self, "feature_low_", None)
        if low is not None:
            x = np.clip(x, low, self.feature_high_)
        return (np.append(x, age) - self.feature_mean_) / self.feature_scale_

    def _factors(
        self, z: np.ndarray, raw: np.ndarray, mode: str
    ) -> list[tuple[str, float, float, float | None]]:
        """Each covariate's pull on the dominant mode's log-life, largest first.

        ``importance`` is the covariate's share of ``sum |beta_j z_j|``; the threshold is
        the value at which that covariate alone would halve the characteristic life.
        """
        mm = self.modes_[mode]
        names = [*self.features, "age_hours"]
        pull = mm.coef * z
        total = float(np.abs(pull).sum()) or 1.0
        out = []
        for j in np.argsort(-np.abs(pull))[:5]:
            beta = mm.coef[j]
            threshold = (
                float(self.feature_mean_[j] - math.log(2) * self.feature_scale_[j] / beta)
                if abs(beta) > 1e-9
                else None
            )
            out.append((names[j], float(abs(pull[j]) / total), float(raw[j]), threshold))
        return out

    # -- artifact ------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "feature_mean": self.feature_mean_.tolist(),
            "feature_scale": self.feature_scale_.tolist(),
            **(
                {
                    "feature_low": self.feature_low_.tolist(),
                    "feature_high": self.feature_high_.tolist(),
                }
                if hasattr(self, "feature_low_")
                else {}
            ),
            "modes": {
                m: {"intercept": mm.intercept, "coef": mm.coef.tolist(), "rho": mm.rho}
                for m, mm in sorted(self.modes_.items())
            },
        }

    def to_bytes(self) -> bytes:
        """A versioned JSON artifact (no pickle): parameters plus provenance."""
        self._require_fitted()
        doc = {
            "format": ARTIFACT_FORMAT,
            "version": self.version_,
            "name": self.name,
            "penalizer": self.penalizer,
            "confidence": self.confidence,
            "horizons": list(self.horizons),
            "n_rows": self.n_rows_,
            "n_failures": self.n_failures_,
            **self._params(),
        }
        # Beside the parameters, not in the version hash: the same fitted model has the
        # same version with or without its drift reference.
        if self.drift_reference_ is not None:
            doc["drift_reference"] = self.drift_reference_.to_dict()
        return json.dumps(doc, sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> SurvivalRulModel:
        try:
            doc = json.loads(blob)
        except ValueError as exc:
            raise ValueError(f"not a survival model artifact: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a survival model artifact of format {ARTIFACT_FORMAT!r}")
        model = cls(
            features=doc["features"],
            penalizer=doc["penalizer"],
            confidence=doc["confidence"],
            horizons=doc["horizons"],
            name=doc["name"],
        )
        model.feature_mean_ = np.array(doc["feature_mean"], dtype=np.float64)
        model.feature_scale_ = np.array(doc["feature_scale"], dtype=np.float64)
        if "feature_low" in doc:  # artifacts before the range was kept have no bounds
            model.feature_low_ = np.array(doc["feature_low"], dtype=np.float64)
            model.feature_high_ = np.array(doc["feature_high"], dtype=np.float64)
        model.modes_ = {
            m: _ModeModel(p["intercept"], np.array(p["coef"], dtype=np.float64), p["rho"])
            for m, p in doc["modes"].items()
        }
        model.n_rows_ = int(doc["n_rows"])
        model.n_failures_ = int(doc["n_failures"])
        if "drift_reference" in doc:  # artifacts made before drift detection have none
            model.drift_reference_ = DriftReference.from_dict(doc["drift_reference"])
        model.version_ = model._version()
        if model.version_ != doc["version"]:
            raise ValueError(
                f"artifact version {doc['version']!r} does not match its parameters "
                f"({model.version_!r}): the file was altered"
            )
        return model

    def __repr__(self) -> str:
        if not self.fitted:
            return f"SurvivalRulModel(features={len(self.features)}, unfitted)"
        modes = ", ".join(f"{m}: rho={mm.rho:.2f}" for m, mm in self.modes_.items())
        return (
            f"SurvivalRulModel({self.version_}, {len(self.features)} features, "
            f"{self.n_failures_} failures in {self.n_rows_} rows; {modes})"
        )


def check_model_arguments(
    features: Sequence[str], confidence: float, horizons: Sequence[int]
) -> None:
    """The arguments every RUL model takes, checked (a bad one is named)."""
    if not features:
        raise ValueError("features must name at least one feature")
    if len(set(features)) != len(features):
        raise ValueError(f"features must be unique, got {list(features)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not horizons or any(h <= 0 for h in horizons):
        raise ValueError(f"horizons must be positive, got {list(horizons)}")


def artifact_version(name: str, params: Mapping[str, Any]) -> str:
    """A model version: its name and a hash of its fitted parameters."""
    payload = json.dumps(params, sort_keys=True).encode()
    return f"{name}-{hashlib.sha256(payload).hexdigest()[:10]}"


def feature_vector(
    features: Sequence[float] | np.ndarray | Mapping[str, float], names: Sequence[str]
) -> np.ndarray:
    """The features a model reads, in its order, checked: given by name or in order."""
    if isinstance(features, Mapping):
        try:
            x = np.array([features[f] for f in names], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"features is missing {exc.args[0]!r}") from None
    else:
        x = np.asarray(features, dtype=np.float64)
    if x.shape != (len(names),):
        raise ValueError(f"features must have {len(names)} values, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    return x


def _ages(age: float | Mapping[str, float], modes: list[str]) -> dict[str, float]:
    if isinstance(age, Mapping):
        unknown = sorted(set(age) - set(modes))
        if unknown:
            raise ValueError(f"age names failure modes the model does not know: {unknown}")
        default = max(age.values(), default=0.0)
        ages = {m: float(age.get(m, default)) for m in modes}
    else:
        ages = dict.fromkeys(modes, float(age))
    for m, a in ages.items():
        if not (a >= 0 and math.isfinite(a)):
            raise ValueError(f"age must be finite and >= 0, got {a} for {m}")
    return ages


def _quantile(grid: np.ndarray, surv: np.ndarray, level: float) -> float:
    """Smallest horizon where survival has fallen to ``level`` (linear interpolation)."""
    i = int(np.searchsorted(-surv, -level))  # surv is non-increasing
    if i <= 0:
        return 0.0
    if i >= len(grid):
        return float(grid[-1])
    s0, s1 = surv[i - 1], surv[i]
    frac = (s0 - level) / (s0 - s1) if s0 != s1 else 0.0
    return float(grid[i - 1] + frac * (grid[i] - grid[i - 1]))
