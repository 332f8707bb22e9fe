"""Write the sample data shipped in the repository, byte for byte the same on every run.

    python samples/generate.py                        # rewrite the shipped files
    python samples/generate.py --check                # exit 1 if a file in samples/ differs from what this writes
    python samples/generate.py --check --clean-clone  # also sourcedata/, testdata/, config.json (CI)

Writes, in the classic format of the churn-risk exercise (one row per corporate customer):

- ``samples/sourcedata/dataset1.csv`` and ``samples/sourcedata/dataset2.csv``: the first batches
  (dataset2 repeats a few rows of dataset1, as real exports do, to show whole-row de-duplication),
  and a working copy of each in ``sourcedata/`` for ``make run``;
- ``samples/testdata/testdata.csv``: labelled hold-out data the models are scored on, and its
  working copy in ``testdata/``;
- ``samples/later/dataset3.csv``: a later batch in which the customers changed (less activity, more
  of them on the basic plan; what drives churn stays the same), for the README's walk-through to
  drop into ``sourcedata/`` and watch the drift found, the model retrained and redeployed;
- ``samples/customers/customers.csv``: current customers, without the churn column, for the
  walk-through to drop into ``scoringdata/`` and read the ranked risk list from ``predictions/``.
  Three of them are on a plan the model never saw in training (``enterprise``).

The copies under ``samples/`` are the project's: tests build their projects from them (and from
``samples/config.json``, the shipped ``config.json``), never from ``sourcedata/``, ``testdata/`` or
``config.json``, which are the user's to replace with their own set-up. So ``--check`` (a test runs
it) looks at ``samples/`` only; ``--clean-clone`` also checks that the working copies are still the
shipped ones, which is true on a clean clone only (CI runs it, see ``.ci/run``).

Columns: ``corporation`` (an id, not a feature), ``lastmonth_activity``, ``lastyear_activity``,
``number_of_employees`` (a few cells blank), ``plan`` (categorical) and ``exited`` (0/1, the target).
"""

from __future__ import annotations

import argparse
import math
import string
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HEADER = ["corporation", "lastmonth_activity", "lastyear_activity", "number_of_employees", "plan", "exited"]
PLANS = ("basic", "standard", "premium")


def _codes(rng: np.random.Generator, count: int) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    return ["".join(rng.choice(letters, 4)) for _ in range(count)]


def make_customers(rng: np.random.Generator, count: int, *, drifted: bool = False) -> list[list[str]]:
    """Return ``count`` rows of customers as CSV cells; ``drifted`` shifts activity, plans and churn."""
    plan_shares = (0.6, 0.3, 0.1) if drifted else (0.35, 0.4, 0.25)
    plans = rng.choice(len(PLANS), size=count, p=plan_shares)
    employees = np.round(rng.lognormal(mean=3.5, sigma=1.0, size=count)).astype(int) + 1
    yearly = rng.lognormal(mean=6.5 + 0.3 * plans, sigma=0.8, size=count)
    if drifted:
        yearly *= 0.45
    monthly = yearly / 12 * rng.lognormal(mean=0.0, sigma=0.5, size=count)
    logit = (
        1.2
        - 1.1 * (np.log1p(monthly) - 3.5)
        - 0.35 * (np.log(employees) - 3.5)
        - 0.7 * plans
        + rng.normal(0.0, 0.6, size=count)
    )
    exited = (rng.random(count) < 1 / (1 + np.exp(-logit))).astype(int)
    blank_employees = rng.random(count) < 0.02
    rows = []
    for code, month, year, staff, plan, label, blank in zip(
        _codes(rng, count), monthly, yearly, employees, plans, exited, blank_employees
    ):
        rows.append([
            code,
            str(int(math.floor(month))),
            str(int(math.floor(year))),
            "" if blank else str(int(staff)),
            PLANS[plan],
            str(int(label)),
        ])
    return rows


SAMPLES = ROOT / "samples"
# The working copies a fresh clone runs on (make run), and the canonical copy in samples/ of each.
WORKING_COPIES = {
    ROOT / "sourcedata" / "dataset1.csv": SAMPLES / "sourcedata" / "dataset1.csv",
    ROOT / "sourcedata" / "dataset2.csv": SAMPLES / "sourcedata" / "dataset2.csv",
    ROOT / "testdata" / "testdata.csv": SAMPLES / "testdata" / "testdata.csv",
    ROOT / "config.json": SAMPLES / "config.json",  # kept by hand, not generated
}


def sample_files() -> dict[Path, str]:
    """Return every generated sample file in samples/ with its exact text."""
    rng = np.random.default_rng(5)
    first = make_customers(rng, 400)
    second = make_customers(rng, 390) + [first[i] for i in range(0, 100, 10)]
    test = make_customers(rng, 300)
    later = make_customers(rng, 400, drifted=True)
    current = [row[:-1] for row in make_customers(rng, 500)]  # no churn label yet
    for row in current[7:300:123]:
        row[HEADER.index("plan")] = "enterprise"

    def text(rows: list[list[str]], header: list[str] = HEADER) -> str:
        return "\n".join(",".join(row) for row in [header, *rows]) + "\n"

    return {
        SAMPLES / "sourcedata" / "dataset1.csv": text(first),
        SAMPLES / "sourcedata" / "dataset2.csv": text(second),
        SAMPLES / "testdata" / "testdata.csv": text(test),
        SAMPLES / "later" / "dataset3.csv": text(later),
        SAMPLES / "customers" / "customers.csv": text(current, HEADER[:-1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) the sample data shipped in the repository.")
    parser.add_argument("--check", action="store_true", help="compare with the files in samples/ instead of writing")
    parser.add_argument("--clean-clone", action="store_true",
                        help="with --check: also compare sourcedata/, testdata/ and config.json with their copies in "
                             "samples/ (true on a clean clone only, not once you put your own data there)")
    args = parser.parse_args(argv)
    if args.clean_clone and not args.check:
        parser.error("--clean-clone goes with --check")
    files = sample_files()
    differing = []
    for path, content in files.items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                differing.append(path.relative_to(ROOT))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({content.count(chr(10)) - 1} rows)")
    for working, canonical in WORKING_COPIES.items():
        if args.check:
            if args.clean_clone and (not working.exists() or working.read_bytes() != canonical.read_bytes()):
                differing.append(working.relative_to(ROOT))
        elif canonical in files:  # config.json is the user's: never overwritten
            working.parent.mkdir(parents=True, exist_ok=True)
            working.write_text(files[canonical], encoding="utf-8")
            print(f"wrote {working.relative_to(ROOT)} (a copy of {canonical.relative_to(ROOT)})")
    if differing:
        print("differs from the generator: " + ", ".join(map(str, differing)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
