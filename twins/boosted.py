"""Remaining useful life as a survival distribution around a boosted health index.

Two parts, fitted on the same landmark rows as :class:`~twins.survival.SurvivalRulModel`
(features at age ``a``, remaining life ``R = T - a``):

1. **Health index** ``g(x)``: gradient-boosted trees (scikit-learn's
   ``HistGradientBoostingRegressor``, squared error) estimate the remaining life from the
   condition features, with the usual piecewise-linear cap: the target is ``min(R, cap)``
   (early in life "a long time" is all the data can say).
2. **Survival around it**: ``R`` given ``g`` is Weibull with median ``g`` and a shape
   that depends on ``g``::

       S(h | x) = exp(-ln 2 * (h / g(x)) ** rho(g)),   log rho = -(a0 + a1 * (log g - c))

   ``a0, a1`` are fitted by maximum likelihood (``scipy.optimize``) on *out-of-fold*
   indices (each unit's ``g`` from trees that never saw that unit), with lives longer
   than the cap censored at the cap, so the interval is as wide as the index's real
   errors, wider far from failure and narrower close to it.
3. **Beyond the cap.** The index cannot tell 150 from 250 (its target stops at the cap),
   but the training lives can: past ``J = max(cap, g)`` the survival goes on as the
   fleet's own life beyond the cap, a Weibull of the excess ``R - cap`` fitted on the
   rows that lived past the cap (``tail_``)::

       S(h | x) = S_g(J) * exp(-((h - J) / lam) ** k)        for h > J

   Without it a machine with no visible wear got an upper bound a little past the cap,
   and every one that would run longer than that was outside its interval (C-MAPSS
   FD002: 33 of the 37 test engines with more than 150 cycles to go).
4. **Calibration.** The family is an approximation, so the spread is finally scaled
   (``rho / f``, one factor ``spread_factor_``) until the central interval holds the
   true remaining life of exactly ``confidence`` of the out-of-fold failed rows: a
   conformal step on the same out-of-fold indices, which changes the width of the
   interval but never the median.

The median is the boosted point estimate; the 90 % interval, the curve and the failure
probabilities by horizon come from ``S``. The fitted trees are exported into plain arrays
and evaluated with numpy (no scikit-learn at prediction, no pickle in the artifact), and
the artifact is JSON with a version hash like the Weibull AFT model's.

Failure modes: the index predicts the first failure of any mode; ``mode_probability`` is
each mode's share of the training failures (the AFT model attributes modes per machine;
this one does not yet).

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for unit in range(40):
...     life = rng.uniform(150, 300)
...     for age in np.arange(0, life, 10.0):
...         wear = max(age - (life - 100), 0) / 100      # degradation starts 100 before the end
...         rows.append({"unit": unit, "entry": age, "duration": life, "event": True,
...                      "mode": "hpc_degradation", "wear": wear + rng.normal(0, 0.05)})
>>> model = BoostedRulModel(["wear"], cap=125.0, max_iter=60).fit(pd.DataFrame(rows))
>>> worn, new = model.predict([0.8], age=200.0), model.predict([0.0], age=20.0)
>>> worn.median < 40 < 110 < new.median
True
>>> worn.lower < worn.median < worn.upper
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from schemas.rul import FAILURE_HORIZONS_H
from twins.survival import (
    RulEstimate,
    _ages,
    artifact_version,
    check_model_arguments,
    feature_vector,
)

ARTIFACT_FORMAT = "twinfleet.boosted-survival/1"
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class TreeEnsemble:
    """Regression trees as padded arrays (trees, nodes), evaluated with numpy.

    ``predict`` walks every tree at once for every row: at a split node a row goes left
    when ``x[feature] <= threshold`` (scikit-learn's rule); leaves hold the values summed
    with ``baseline``.
    """

    baseline: float
    feature: np.ndarray  # int64 (trees, nodes)
    threshold: np.ndarray  # float64
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    leaf: np.ndarray  # bool
    value: np.ndarray  # float64
    depth: int

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        """Export a fitted ``HistGradientBoostingRegressor`` (numeric features only).

        scikit-learn has no public accessor for these trees; the export reads the
        predictor node arrays, and the tests check it predicts exactly what
        scikit-learn predicts (so a scikit-learn change that breaks it fails loudly)."""
        trees = [p[0].nodes for p in model._predictors]
        if not trees:
            raise ValueError("the boosted model has no trees")
        if any(bool(t["is_categorical"].any()) for t in trees):
            raise ValueError("categorical splits are not supported")
        width = max(len(t) for t in trees)

        def pad(field: str, dtype: Any, fill: Any) -> np.ndarray:
            out = np.full((len(trees), width), fill, dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = t[field]
            return out

        return cls(
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            feature=pad("feature_idx", np.int64, 0),
            threshold=pad("num_threshold", np.float64, 0.0),
            left=pad("left", np.int64, 0),
            right=pad("right", np.int64, 0),
            leaf=pad("is_leaf", bool, True),
            value=pad("value", np.float64, 0.0),
            depth=int(max(int(t["depth"].max()) for t in trees)),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for rows ``x`` (rows, features), which must be finite."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        n_trees = self.feature.shape[0]
        trees = np.arange(n_trees)[None, :]
        rows = np.arange(len(x))[:, None]
        node = np.zeros((len(x), n_trees), dtype=np.int64)
        for _ in range(self.depth):
            go_left = x[rows, self.feature[trees, node]] <= self.threshold[trees, node]
            nxt = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(self.leaf[trees, node], node, nxt)
        return np.asarray(self.baseline + self.value[trees, node].sum(axis=1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "leaf": self.leaf.astype(int).tolist(),
            "value": self.value.tolist(),
            "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TreeEnsemble:
        return cls(
            baseline=float(doc["baseline"]),
            feature=np.array(doc["feature"], dtype=np.int64),
            threshold=np.array(doc["threshold"], dtype=np.float64),
            left=np.array(doc["left"], dtype=np.int64),
            right=np.array(doc["right"], dtype=np.int64),
            leaf=np.array(doc["leaf"], dtype=bool),
            value=np.array(doc["value"], dtype=np.float64),
            depth=int(doc["depth"]),
        )


class BoostedRulModel:
    """Survival distribution of remaining life around a boosted health index.

    Parameters
    ----------
    features: names of the condition features, in the order ``predict`` receives them.
    cap: the piecewise-linear cap of the index's target (None: no cap); lives longer than
        the cap count as censored at the cap when the spread is fitted.
    folds: folds (by unit) for the out-of-fold indices the spread is fitted on.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf: the boosted trees'.
    include_age: give the trees the age (time since installation or repair) too.
    confidence: width of the central interval reported (0.9: 5th to 95th percentile).
    horizons: times at which the failure probability is reported.
    name: prefix of the model version string.
    seed: seed of the trees.
    """

    def __init__(
        self,
        features: Sequence[str],
        cap: float | None = None,
        folds: int = 5,
        max_iter: int = 300,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        include_age: bool = True,
        confidence: float = 0.9,
        horizons: Sequence[int] = FAILURE_HORIZONS_H,
        name: str = "boosted-weibull",
        seed: int = 0,
    ) -> None:
        check_model_arguments(features, confidence, horizons)
        if cap is not None and not (cap > 0 and math.isfinite(cap)):
            raise ValueError(f"cap must be positive, got {cap}")
        if folds < 2:
            raise ValueError(f"folds must be at least 2, got {folds}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        if not 0 < learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate}")
        if max_leaf_nodes < 2:
            raise ValueError(f"max_leaf_nodes must be at least 2, got {max_leaf_nodes}")
        if min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be at least 1, got {min_samples_leaf}")
        self.features = list(features)
        self.cap = None if cap is None else float(cap)
        self.folds = int(folds)
        self.max_iter = int(max_iter)
        self.learning_rate = float(learning_rate)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.min_samples_leaf = int(min_samples_leaf)
        self.include_age = bool(include_age)
        self.confidence = float(confidence)
        self.horizons = tuple(int(h) for h in horizons)
        self.name = name
        self.seed = int(seed)

    # -- fitting -------------------------------------------------------------------------
    def _trees(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.seed,
        )

    def _design(self, x: np.ndarray, age: np.ndarray) -> np.ndarray:
        return np.column_stack([x, age]) if self.include_age else x

    def fit(self, frame: pd.DataFrame) -> BoostedRulModel:
        """Fit on landmark rows: ``unit``, ``entry`` (age), ``duration`` (age at failure
        or end of observation), ``event``, ``mode`` and the feature columns."""
        from sklearn.model_selection import GroupKFold

        missing = [
            c
            for c in ("unit", "entry", "duration", "event", "mode", *self.features)
            if c not in frame
        ]
        if missing:
            raise ValueError(f"frame is missing columns: {missing}")
        x = frame[self.features].to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            bad = [
                f for f, ok in zip(self.features, np.isfinite(x).all(axis=0), strict=True) if not ok
            ]
            raise ValueError(f"features contain NaN or infinite values: {bad}")
        entry = frame["entry"].to_numpy(dtype=np.float64)
        duration = frame["duration"].to_numpy(dtype=np.float64)
        if (entry < 0).any() or (entry >= duration).any():
            raise ValueError("rows need 0 <= entry < duration")
        event = frame["event"].to_numpy(dtype=bool)
        units = frame["unit"].to_numpy()
        if len(np.unique(units)) < self.folds:
            raise ValueError(
                f"need at least folds={self.folds} units to fit, got {len(np.unique(units))}"
            )
        if not event.any():
            raise ValueError("frame has no failures (event) to learn from")
        remaining = duration - entry
        cap = self.cap if self.cap is not None else math.inf
        # The index learns min(R, cap); a censored row says so only if it ran past the cap.
        known = event | (remaining >= cap)
        target = np.minimum(remaining, cap)
        design = self._design(x, entry)
        oof = np.full(len(frame), np.nan)
        for train, test in GroupKFold(self.folds).split(design, target, units):
            use = train[known[train]]
            oof[test] = self._trees().fit(design[use], target[use]).predict(design[test])
        trees = self._trees().fit(design[known], target[known])
        floor = max(float(np.min(target[known])), 1e-3)
        g = np.maximum(oof, floor)
        spread = self._fit_spread(g, target, event & (remaining <= cap))
        self.trees_ = TreeEnsemble.from_sklearn(trees)
        self.floor_ = floor
        self.spread_ = spread
        self.tail_ = self._fit_tail(remaining, event, cap)
        self.spread_factor_ = 1.0
        self.spread_factor_ = self._calibrate(g[event], remaining[event])
        gains = np.zeros(design.shape[1])
        for p in trees._predictors:
            nodes = p[0].nodes[p[0].nodes["is_leaf"] == 0]
            np.add.at(gains, nodes["feature_idx"], nodes["gain"])
        self.importance_ = gains / (gains.sum() or 1.0)
        shares = frame.loc[event, "mode"].astype(str).value_counts(normalize=True)
        self.modes_ = {str(m): float(v) for m, v in sorted(shares.items())}
        self.n_rows_ = len(frame)
        self.n_failures_ = int(frame.loc[event, "unit"].nunique())
        self.summary_ = self._summary(g, remaining, event, cap)
        self.version_ = self._version()
        return self

    @staticmethod
    def _fit_spread(
        g: np.ndarray, target: np.ndarray, failed: np.ndarray
    ) -> tuple[float, float, float]:
        """``a0, a1`` (and the centre of ``log g``) by maximum likelihood: Weibull of
        the capped target with median ``g``, censored where it is not a failure."""
        from scipy.optimize import minimize

        observed = np.maximum(target, 1e-3)
        centre = float(np.mean(np.log(g)))

        def nll(p: np.ndarray) -> float:
            rho = np.exp(-(p[0] + p[1] * (np.log(g) - centre)))
            u = _LN2 * (observed / g) ** rho
            logf = np.log(rho) - np.log(observed) + np.log(u) - u
            return float(-np.sum(np.where(failed, logf, -u)))

        spread = minimize(
            nll,
            np.array([-1.0, 0.0]),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 2000},
        )
        if not spread.success:
            raise ValueError(f"the spread did not converge: {spread.message}")
        return float(spread.x[0]), float(spread.x[1]), centre

    @staticmethod
    def _fit_tail(
        remaining: np.ndarray, event: np.ndarray, cap: float
    ) -> tuple[float, float] | None:
        """Weibull ``(k, lam)`` of the life beyond the cap, from the rows that lived past
        it (censored where the history ended without a failure); None without a cap or
        with fewer than 10 such failed rows."""
        from scipy.optimize import minimize

        beyond = remaining > cap
        if not math.isfinite(cap) or int((beyond & event).sum()) < 10:
            return None
        excess = np.maximum(remaining[beyond] - cap, 1e-3)
        failed = event[beyond]

        def nll(p: np.ndarray) -> float:
            k, lam = np.exp(p)
            u = (excess / lam) ** k
            logf = math.log(k) - np.log(excess) + np.log(u) - u
            return float(-np.sum(np.where(failed, logf, -u)))

        fit = minimize(
            nll,
            np.array([0.0, math.log(float(excess.mean()))]),
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 2000},
        )
        if not fit.success:
            raise ValueError(f"the tail beyond the cap did not converge: {fit.message}")
        return float(math.exp(fit.x[0])), float(math.exp(fit.x[1]))

    def _calibrate(self, g: np.ndarray, remaining: np.ndarray) -> float:
        """The spread factor whose interval holds ``confidence`` of the out-of-fold
        failed rows ``(g, remaining)`` (bisection; coverage grows with the factor)."""
        tail = (1 - self.confidence) / 2

        def coverage(factor: float) -> float:
            self.spread_factor_ = factor
            lo, hi = self._quantiles(g, 1 - tail, tail)
            return float(np.mean((lo <= remaining) & (remaining <= hi)))

        low, high = 0.25, 4.0
        if coverage(high) < self.confidence:
            return high
        if coverage(low) >= self.confidence:
            return low
        for _ in range(40):
            mid = (low + high) / 2
            low, high = (mid, high) if coverage(mid) < self.confidence else (low, mid)
        return high

    def _summary(
        self, g: np.ndarray, remaining: np.ndarray, event: np.ndarray, cap: float
    ) -> dict[str, float]:
        """Out-of-fold quality: concordance of the index with remaining life, error of the
        median on failed rows within the cap, and how often the interval held the truth."""
        from lifelines.utils import concordance_index

        lo, hi = self._quantiles(g, (1 + self.confidence) / 2, (1 - self.confidence) / 2)
        inside = (lo <= remaining) & (remaining <= hi)
        within = event & (remaining <= cap)
        return {
            "concordance": float(concordance_index(remaining, g, event)),
            "rmse_within_cap": float(np.sqrt(np.mean((g[within] - remaining[within]) ** 2))),
            "interval_coverage": float(np.mean(inside[event])),
            "interval_coverage_within_cap": float(np.mean(inside[within])),
            "spread_factor": self.spread_factor_,
        }

    def _version(self) -> str:
        return artifact_version(self.name, self._params())

    @property
    def fitted(self) -> bool:
        return hasattr(self, "trees_")

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError("the model is not fitted yet: call fit() or load an artifact")

    # -- prediction ----------------------------------------------------------------------
    def _rho(self, g: np.ndarray) -> np.ndarray:
        a0, a1, centre = self.spread_
        return np.asarray(np.exp(-(a0 + a1 * (np.log(g) - centre))) / self.spread_factor_)

    def _junction(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the tail takes over (``J = max(cap, g)``) and the survival there."""
        junction = np.maximum(g, self.cap if self.cap is not None else math.inf)
        with np.errstate(over="ignore"):
            return junction, np.exp(-_LN2 * (junction / g) ** self._rho(g))

    def _quantiles(self, g: np.ndarray, *levels: float) -> list[np.ndarray]:
        """Times where survival has fallen to each level."""
        rho = self._rho(g)
        out = [g * (-math.log(q) / _LN2) ** (1 / rho) for q in levels]
        if self.tail_ is None:
            return out
        k, lam = self.tail_
        junction, at = self._junction(g)
        for i, q in enumerate(levels):
            # Past the junction only where survival there is still above the level.
            beyond = junction + lam * (-np.log(q / np.maximum(at, q))) ** (1 / k)
            out[i] = np.where(q >= at, out[i], beyond)
        return out

    def _survival(self, h: np.ndarray, g: float) -> np.ndarray:
        """``S(h | g)`` at times ``h``."""
        ga = np.array([g])
        rho = float(self._rho(ga)[0])
        s = np.exp(-_LN2 * (np.asarray(h, dtype=np.float64) / g) ** rho)
        if self.tail_ is None:
            return s
        k, lam = self.tail_
        junction, at = (float(v[0]) for v in self._junction(ga))
        past = np.maximum(np.asarray(h, dtype=np.float64) - junction, 0.0)
        return np.where(h > junction, at * np.exp(-((past / lam) ** k)), s)

    def index(self, features: np.ndarray, age: np.ndarray | float) -> np.ndarray:
        """The health index (median remaining life) of rows of features at ``age``."""
        self._require_fitted()
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.shape[1] != len(self.features):
            raise ValueError(f"features must have {len(self.features)} values, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite")
        ages = np.broadcast_to(np.asarray(age, dtype=np.float64), (len(x),))
        return np.maximum(self.trees_.predict(self._design(x, ages)), self.floor_)

    def predict(
        self,
        features: Sequence[float] | np.ndarray | Mapping[str, float],
        age: float | Mapping[str, float],
    ) -> RulEstimate:
        """Remaining-life distribution of one machine (same call as the AFT model's)."""
        self._require_fitted()
        x = feature_vector(features, self.features)
        ages = _ages(age, list(self.modes_))
        g = self.index(x[None, :], max(ages.values()))
        median = float(g[0])
        tail = (1 - self.confidence) / 2
        lower, upper = (float(q[0]) for q in self._quantiles(g, 1 - tail, tail))
        curve_h = np.linspace(0.0, max(upper * 1.25, 1e-6), 25)
        curve_s = self._survival(curve_h, median)
        at = self._survival(np.array(self.horizons, dtype=np.float64), median)
        probs = {h: float(1 - s) for h, s in zip(self.horizons, at, strict=True)}
        mode = max(self.modes_, key=self.modes_.__getitem__)
        names = [*self.features, "age_hours"] if self.include_age else self.features
        raw = np.append(x, max(ages.values())) if self.include_age else x
        order = np.argsort(-self.importance_)[:5]
        factors: list[tuple[str, float, float, float | None]] = [
            (names[j], float(self.importance_[j]), float(raw[j]), None) for j in order
        ]
        return RulEstimate(
            median=median,
            lower=lower,
            upper=upper,
            confidence=self.confidence,
            curve_hours=curve_h,
            curve_survival=curve_s,
            failure_probability=probs,
            failure_mode=mode,
            mode_probability=dict(self.modes_),
            factors=factors,
        )

    # -- artifact ------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "cap": self.cap,
            "include_age": self.include_age,
            "trees": self.trees_.to_dict(),
            "floor": self.floor_,
            "spread": list(self.spread_),
            "importance": self.importance_.tolist(),
            "modes": self.modes_,
            # Written only when used, so artifacts made before they existed keep their
            # version hash (and read as: no tail, factor 1).
            **({"tail": list(self.tail_)} if self.tail_ is not None else {}),
            **({"spread_factor": self.spread_factor_} if self.spread_factor_ != 1.0 else {}),
        }

    def to_bytes(self) -> bytes:
        """A versioned JSON artifact (no pickle): parameters plus provenance."""
        self._require_fitted()
        doc = {
            "format": ARTIFACT_FORMAT,
            "version": self.version_,
            "name": self.name,
            "confidence": self.confidence,
            "horizons": list(self.horizons),
            "n_rows": self.n_rows_,
            "n_failures": self.n_failures_,
            "summary": self.summary_,
            **self._params(),
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> BoostedRulModel:
        try:
            doc = json.loads(blob)
        except ValueError as exc:
            raise ValueError(f"not a boosted survival artifact: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a boosted survival artifact of format {ARTIFACT_FORMAT!r}")
        try:
            model = cls(
                features=doc["features"],
                cap=doc["cap"],
                include_age=doc["include_age"],
                confidence=doc["confidence"],
                horizons=doc["horizons"],
                name=doc["name"],
            )
            model.trees_ = TreeEnsemble.from_dict(doc["trees"])
            model.floor_ = float(doc["floor"])
            a0, a1, centre = (float(v) for v in doc["spread"])
            model.spread_ = (a0, a1, centre)
            tail = doc.get("tail")
            model.tail_ = None if tail is None else (float(tail[0]), float(tail[1]))
            model.spread_factor_ = float(doc.get("spread_factor", 1.0))
            model.importance_ = np.array(doc["importance"], dtype=np.float64)
            model.modes_ = {str(m): float(v) for m, v in doc["modes"].items()}
            model.n_rows_ = int(doc["n_rows"])
            model.n_failures_ = int(doc["n_failures"])
            model.summary_ = {str(k): float(v) for k, v in doc["summary"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"boosted survival artifact is incomplete or malformed: {exc}"
            ) from None
        model.version_ = model._version()
        if model.version_ != doc.get("version"):
            raise ValueError(
                f"artifact version {doc.get('version')!r} does not match its parameters "
                f"({model.version_!r}): the file was altered"
            )
        return model

    def __repr__(self) -> str:
        if not self.fitted:
            return f"BoostedRulModel(features={len(self.features)}, unfitted)"
        return (
            f"BoostedRulModel({self.version_}, {len(self.features)} features, "
            f"{self.trees_.feature.shape[0]} trees, cap={self.cap}, "
            f"{self.n_failures_} failures in {self.n_rows_} rows)"
        )
