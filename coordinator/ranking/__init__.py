"""Latency monotonicity and one-proxy adaptation: tables, search spaces, predictors, ranking."""

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
NB201_LATENCY = os.path.join(DATA_DIR, "nb201_latency_ms.csv")
NB201_ACCURACY = os.path.join(DATA_DIR, "nb201_accuracy.csv")
