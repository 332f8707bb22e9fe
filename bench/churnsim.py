"""A churn-data generator for the decision benchmark: worlds you can change on purpose.

Customers of a subscription business: numeric features (tenure, charges, support calls, usage with
missing values, age with missing values, late payments) and categorical ones (contract, payment,
region), and a churn rule (the log-odds of leaving as a function of the features). A world is a
population (how the features are distributed) and a rule:

- ``World()``: the starting world;
- ``World(change=c)``: concept drift, the same customers but another rule, mixed in by ``c``
  (support calls no longer matter, charges and late payments matter more);
- ``World(shift=s)``: covariate drift, the same rule but a population moved by ``s`` (longer
  tenure, annual contracts, higher charges: fewer churners, and harder to tell apart).

``World.frame(n, rng)`` returns a typed DataFrame, as ``churnlib.dataset`` reads a labelled file
(numbers as float with NaN for missing, categories as text with NaN for missing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CONTRACTS = ("monthly", "annual", "two_year")
PAYMENTS = ("card", "bank", "check", "voucher")
REGIONS = ("north", "south", "east", "west", "central")
NUMERIC = ("tenure_months", "monthly_charges", "support_calls", "usage_gb", "age", "late_payments")
CATEGORICAL = ("contract", "payment", "region")
TARGET = "churned"
COLUMNS = ("customer_id",) + NUMERIC + CATEGORICAL + (TARGET,)


@dataclass(frozen=True)
class World:
    change: float = 0.0  # 0: the starting rule; 1: the changed rule; between: a mix of the two
    shift: float = 0.0   # 0: the starting population; 1: the moved one

    def features(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        s = self.shift
        contract_p = np.array([0.5, 0.3, 0.2]) * (1 - s) + np.array([0.25, 0.6, 0.15]) * s
        contract = rng.choice(3, size=n, p=contract_p / contract_p.sum())
        tenure = np.clip(np.round(rng.exponential(24 * (1 + 0.8 * s), size=n)) + 1, 1, 72)
        charges = np.clip(rng.normal(70 + 20 * s, 25, size=n), 10, 150)
        support = rng.poisson(1.5 - 0.5 * s, size=n).astype(float)
        usage = np.round(rng.lognormal(3.0, 0.8, size=n), 1)
        usage[rng.random(n) < 0.05] = np.nan
        age = np.round(rng.normal(45, 12, size=n))
        age[rng.random(n) < 0.03] = np.nan
        late = rng.poisson(0.4 + 0.3 * (contract == 0), size=n).astype(float)
        payment = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
        region = rng.choice(5, size=n)
        frame = pd.DataFrame({
            "customer_id": np.char.add("c", rng.integers(0, 10**9, size=n).astype(str)).astype(object),
            "tenure_months": tenure, "monthly_charges": np.round(charges, 2), "support_calls": support,
            "usage_gb": usage, "age": age, "late_payments": late,
            "contract": np.array(CONTRACTS, dtype=object)[contract],
            "payment": np.array(PAYMENTS, dtype=object)[payment],
            "region": np.array(REGIONS, dtype=object)[region],
        })
        missing_payment = rng.random(n) < 0.02
        frame.loc[missing_payment, "payment"] = np.nan
        return frame

    def log_odds(self, frame: pd.DataFrame) -> np.ndarray:
        tenure = np.log(frame["tenure_months"].to_numpy())
        charges = (frame["monthly_charges"].to_numpy() - 70) / 25
        support = frame["support_calls"].to_numpy()
        late = frame["late_payments"].to_numpy()
        contract = frame["contract"].map({"monthly": 1.0, "annual": 0.0, "two_year": -1.0}).to_numpy()
        check = (frame["payment"] == "check").to_numpy(dtype=float)
        usage = np.nan_to_num(frame["usage_gb"].to_numpy(), nan=20.0)
        start = -0.5 - 1.1 * tenure + 0.8 * charges + 0.6 * support + 1.2 * contract + 0.8 * check \
            + 0.35 * late - 0.015 * usage
        # the changed rule: what drives churn is no longer what the model learnt
        changed = -1.4 - 0.2 * tenure + 1.3 * charges - 0.35 * support + 0.3 * contract + 0.9 * late \
            + 0.02 * usage - 0.4 * check
        return (1 - self.change) * start + self.change * changed

    def frame(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        frame = self.features(n, rng)
        probability = 1 / (1 + np.exp(-self.log_odds(frame)))
        frame[TARGET] = (rng.random(n) < probability).astype(np.int64)
        return frame


def to_csv(frame: pd.DataFrame) -> str:
    """Return the frame as the CSV text a user would drop into sourcedata/."""
    return frame.to_csv(index=False, na_rep="")
