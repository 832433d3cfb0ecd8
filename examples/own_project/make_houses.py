"""Writes data/houses.csv: 3,000 synthetic house sales (python make_houses.py).

Price in thousands, from area, rooms, age, distance to the centre and the district (a text
column), with noise: a learnable target whose best MSE is the noise's variance (about 400).
"""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(0)
n = 3000
district = rng.choice(["north", "south", "old town", "harbour"], size=n, p=[0.3, 0.3, 0.2, 0.2])
area = rng.gamma(shape=6.0, scale=15.0, size=n).round(1)
rooms = np.clip((area / 25 + rng.normal(0, 0.7, n)).round(), 1, 8).astype(int)
age = rng.integers(0, 100, size=n)
distance = rng.exponential(4.0, size=n).round(2)
premium = pd.Series(district).map({"north": 0, "south": -20, "old town": 60, "harbour": 35})
price = (
    2.4 * area
    + 8 * rooms
    - 0.6 * age
    + 0.004 * age**2
    - 25 * np.log1p(distance)
    + premium.to_numpy()
    + 90
    + rng.normal(0, 20, n)
).round(1)
frame = pd.DataFrame(
    {"area": area, "rooms": rooms, "age": age, "distance_km": distance, "district": district,
     "price": price}  # fmt: skip
)
Path("data").mkdir(exist_ok=True)
frame.to_csv("data/houses.csv", index=False)
print(f"data/houses.csv: {len(frame)} rows, price {price.mean():.0f} +- {price.std():.0f}")
