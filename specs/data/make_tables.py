"""Writes the example tables of specs/ (both generated, seeded, so they are the same on every machine):

- housing.csv: a price to predict (regression) from numbers on different scales and a neighbourhood name;
- customers.csv: whether a customer churned (yes/no; classification) from age, plan, charges and tenure;
- new-customers.csv: more customers without the answer, for specs/churn-scoring.yaml to score.

Run `python specs/data/make_tables.py` to write them again; the committed files are its output.
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def housing(n: int = 600) -> None:
    rng = np.random.default_rng(11)
    rooms = rng.integers(1, 7, n)
    area = (rooms * 22 + rng.normal(0, 12, n)).clip(18).round(1)
    age = rng.integers(0, 90, n)
    distance = rng.gamma(2.0, 4.0, n).round(2)
    neighbourhood = rng.choice(["old town", "harbour", "hills", "suburbs"], n, p=[0.2, 0.2, 0.2, 0.4])
    premium = {"old town": 90_000, "harbour": 60_000, "hills": 40_000, "suburbs": 0}
    price = (45_000 + 2_600 * area - 700 * age - 4_000 * np.sqrt(distance) * 3
             + np.array([premium[x] for x in neighbourhood]) + rng.normal(0, 18_000, n)).round(-2)
    with (HERE / "housing.csv").open("w") as out:
        out.write("rooms,area_m2,age_years,distance_km,neighbourhood,price\n")
        out.writelines(f"{r},{a},{g},{d},{nb},{p:.0f}\n" for r, a, g, d, nb, p in
                       zip(rooms, area, age, distance, neighbourhood, price))


def customers(n: int = 800, seed: int = 5, name: str = "customers.csv", with_target: bool = True) -> None:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    plan = rng.choice(["basic", "pro", "max"], n)
    charges = rng.normal(50, 20, n).clip(5).round(2)
    tenure = rng.integers(1, 72, n)
    logit = -0.05 * (age - 45) + np.where(plan == "basic", 1.5, -1.0) + 0.04 * (charges - 50) - 0.05 * tenure + 1
    churned = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    with (HERE / name).open("w") as out:
        out.write("age,plan,monthly_charges,tenure" + (",churned\n" if with_target else "\n"))
        out.writelines(f"{a},{p},{c},{t}" + (f",{y}\n" if with_target else "\n")
                       for a, p, c, t, y in zip(age, plan, charges, tenure, churned))


if __name__ == "__main__":
    housing()
    customers()
    customers(200, seed=6, name="new-customers.csv", with_target=False)  # tonight's rows to score
