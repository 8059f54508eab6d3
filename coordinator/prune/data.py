"""Labelled images for training and fine-tuning: scikit-learn's digits, or a user's .npz.

``digits`` is scikit-learn's bundled handwritten-digits set (1,797 real 8x8 images, no
download), split 80/20 by a fixed, seeded, stratified split.  A FILE.npz holds
``x_train, y_train, x_test, y_test``: images as (N, H, W) or (N, C, H, W) with C 1 or 3,
any numeric type, and integer labels from 0.  Either way the images are resized
(bilinear) to the network's input, grey ones repeated to three channels, and
standardized with the training set's mean and deviation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from coordinator.errors import CoordinatorError

SPLIT_SEED = 0
ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(CoordinatorError):
    """A data set that cannot be read or used."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (N, 3, R, R) float32, standardized
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float
    std: float

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def holdout(self, share: float = 0.1, seed: int = SPLIT_SEED) -> Dataset:
        """The training split minus a stratified holdout, with the holdout as its test split:
        for choosing among candidates without looking at the test split."""
        from sklearn.model_selection import train_test_split

        tr, ho = train_test_split(np.arange(len(self.y_train)), test_size=share, random_state=seed,
                                  stratify=self.y_train)  # fmt: skip
        return Dataset(self.name, self.x_train[tr], self.y_train[tr], self.x_train[ho], self.y_train[ho],
                       self.mean, self.std)  # fmt: skip


def load(source: str, resolution: int) -> Dataset:
    """``digits`` or a FILE.npz, at ``resolution``; DataError says what is wrong."""
    if source == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x, y = digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y
        )
        return _prepare("digits", x_train, y_train, x_test, y_test, resolution)
    return _prepare(source, *_read_npz(source), resolution)


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    what = f"data file {path}"
    if not path.endswith(".npz"):
        raise DataError(f"--data {path!r} must be 'digits' or a .npz file holding {', '.join(ARRAYS)}")
    if not os.path.isfile(path):
        raise DataError(f"{what} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [a for a in ARRAYS if a not in data.files]
            if missing:
                raise DataError(f"{what} has no {missing[0]!r} array (it needs {', '.join(ARRAYS)})")
            arrays = tuple(data[a] for a in ARRAYS)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{what} is not an .npz of arrays ({err})") from None
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
            raise DataError(
                f"{what}: x_{name} is {x.shape}; it must be (N, H, W) or (N, C, H, W) with C 1 or 3"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{what}: x_{name} holds {x.dtype}, not numbers")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{what}: y_{name} must be one label per image of x_{name} ({len(x)})")
        if len(y) == 0:
            raise DataError(f"{what}: the {name} split is empty")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise DataError(f"{what}: y_{name} must be integer labels from 0")
    return x_train, y_train, x_test, y_test


def _prepare(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             resolution: int) -> Dataset:  # fmt: skip
    import torch
    import torch.nn.functional as F

    def images(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.asarray(x, np.float32))
        if t.ndim == 3:
            t = t[:, None]
        if t.shape[1] == 1:
            t = t.repeat(1, 3, 1, 1)
        if t.shape[2:] != (resolution, resolution):
            t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)
        return t.numpy()

    train, test = images(x_train), images(x_test)
    mean, std = float(train.mean()), float(train.std()) or 1.0
    return Dataset(name, (train - mean) / std, y_train.astype(np.int64), (test - mean) / std,
                   y_test.astype(np.int64), mean, std)  # fmt: skip
