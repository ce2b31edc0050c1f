#!/usr/bin/env python3
"""Reference forecasts for the SLA ARIMA module, written to tests/fixtures/arima.json.

For a few typical metric shapes (trend, AR(1), random walk, seasonal-ish, noisy flat,
ARMA(1,1)) it fits statsmodels' ARIMA with a fixed order and its default trend (a
constant for d = 0, none for d = 1), then records the 40-step forecast mean and standard
error, the per-step probability of leaving [lo, hi] (normal tails) and the probability of
leaving it at any step within the horizon (share of 20,000 simulated paths from the end
of the sample). `cargo test` compares meteomesh's own fits against these numbers, so CI
needs no Python.

Usage: pip install statsmodels && python3 scripts/gen-sla-reference.py
"""
import json
import pathlib
import warnings

import numpy as np
from scipy.stats import norm
import statsmodels
from statsmodels.tsa.arima.model import ARIMA

warnings.filterwarnings("ignore")
N, H, PATHS = 200, 40, 20000
rng = np.random.default_rng(20261122)


def ar1(phi, mean, sd):
    y = np.empty(N)
    y[0] = mean
    for t in range(1, N):
        y[t] = mean + phi * (y[t - 1] - mean) + rng.normal(0, sd)
    return y


def arma11(phi, theta, mean, sd):
    e = rng.normal(0, sd, N + 1)
    y = np.empty(N)
    prev = 0.0
    for t in range(N):
        prev = phi * prev + e[t + 1] + theta * e[t]
        y[t] = mean + prev
    return y


t = np.arange(N)
series = [
    ("trend", (1, 1, 0), 20 + 0.05 * t + rng.normal(0, 1.0, N)),
    ("ar1", (1, 0, 0), ar1(0.7, 50.0, 2.0)),
    ("random_walk", (0, 1, 0), 100 + np.cumsum(rng.normal(0, 0.5, N))),
    ("seasonal", (2, 0, 0), 60 + 8 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1.0, N)),
    ("noisy_flat", (0, 0, 1), 10 + rng.normal(0, 0.1, N)),
    ("arma11", (1, 0, 1), arma11(0.5, 0.4, 5.0, 1.0)),
]

out = []
for name, order, y in series:
    res = ARIMA(y, order=order).fit()
    fc = res.get_forecast(H)
    mean = fc.predicted_mean
    se = fc.se_mean
    sd = float(np.std(y))
    lo = float(y[-1] - 3.0 * sd)
    hi = float(y[-1] + 2.0 * sd)
    p_step = norm.cdf((lo - mean) / se) + norm.sf((hi - mean) / se)
    sims = res.simulate(H, repetitions=PATHS, anchor="end").reshape(H, PATHS)
    left = ((sims < lo) | (sims > hi)).any(axis=0).mean()
    out.append({
        "name": name,
        "order": {"p": order[0], "d": order[1], "q": order[2]},
        "series": [round(float(v), 6) for v in y],
        "h": H,
        "lo": lo,
        "hi": hi,
        "params": {k: float(v) for k, v in zip(res.param_names, res.params)},
        "aic": float(res.aic),
        "mean": [float(v) for v in mean],
        "se": [float(v) for v in se],
        "prob_step": [float(v) for v in p_step],
        "prob_within": float(left),
    })

path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "arima.json"
path.write_text(json.dumps({"generator": f"statsmodels {statsmodels.__version__}",
                            "series": out}, indent=1) + "\n")
print(f"wrote {path}")
for s in out:
    print(s["name"], s["order"], "aic", round(s["aic"], 2), "p_within", s["prob_within"])
