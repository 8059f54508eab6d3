"""Latency monotonicity and one-proxy adaptation: tables, search spaces, predictors, ranking."""

import os

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
NB201_LATENCY = os.path.join(DATA_DIR, "nb201_latency_ms.csv")
NB201_ACCURACY = os.path.join(DATA_DIR, "nb201_accuracy.csv")
NB201_DEVICES = os.path.join(DATA_DIR, "nb201_devices_ms.csv")
NB201_FULL_ACCURACY = os.path.join(DATA_DIR, "nb201_full_accuracy.csv")
#: search space -> the cross-device predictor shipped for it (``fleetbench train-predictor``)
SHIPPED_PREDICTORS = {"nas-bench-201": os.path.join(DATA_DIR, "nb201_crossdevice.npz")}
#: (search space, accuracy metric) -> the optimizer network shipped for it (``fleetbench train-optimizer``)
SHIPPED_OPTIMIZERS = {
    ("nas-bench-201", metric): os.path.join(DATA_DIR, f"nb201_optimizer_{metric}.npz")
    for metric in ("cifar10_top1", "cifar100_top1", "imagenet16_120_top1")
}
