"""Fill every missing cell of a latency table: the engine behind ``fleetbench predict``.

With a proxy: each target column is predicted from the proxy column and its own
measured cells (the paper's one-proxy setting).  Without: every fully measured
column is a reference.  Columns at least half measured are completed first and
then join the references for the sparser ones.  Measured cells always keep their
measured value.  A column with fewer than ``MIN_ADAPT`` measurements cannot be
adapted: it falls back to the proxy's ranking, with a warning that says so.

With no method named, a column that has every probe of the space's cross-device
predictor measured is predicted by it (``crossdevice``); the others by ``fleet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from coordinator.errors import ModelFileError, NotEnoughDataError
from coordinator.ranking import crossdevice, predictors, uncertainty
from coordinator.ranking.monotonicity import monotonicity
from coordinator.ranking.predictors import Design
from coordinator.ranking.spaces.base import SearchSpace
from coordinator.ranking.tables import LatencyTable

#: fewer measured cells than this and a column gets the proxy's ranking, scaled
MIN_ADAPT = 3
#: columns measured at least this much are completed first and then used as references
DENSE_SHARE = 0.5
#: identifies the sidecar `predict` writes next to its output
META_SCHEMA = "fleetbench.predict/1"


@dataclass
class FillReport:
    proxy: Optional[str] = None
    references: list[str] = field(default_factory=list)
    method: dict[str, str] = field(default_factory=dict)  # device -> how it was filled
    warnings: list[str] = field(default_factory=list)
    #: device -> cross-validated RMS error of its predicted cells, in log-latency (None: unknown)
    log_error: dict[str, Optional[float]] = field(default_factory=dict)

    def metadata(self, table: LatencyTable, method: str) -> dict:
        """What `fleetbench rank` needs to know about a filled table (the .meta.json sidecar)."""
        devices = {}
        for j, name in enumerate(table.devices):
            predicted = np.flatnonzero(~table.measured[:, j]).tolist()
            devices[name] = {
                "measured": int(table.measured[:, j].sum()),
                "predicted_rows": predicted,
                "how": self.method.get(name, "measured (reference)"),
                "log_error_std": self.log_error.get(name) if predicted else 0.0,
            }
        return {
            "schema": META_SCHEMA,
            "rows": len(table.archs),
            "method": method,
            "proxy": self.proxy,
            "references": self.references,
            "devices": devices,
        }


def order_by_agreement(table: LatencyTable, cols: list[int]) -> list[int]:
    """Reference columns, the one agreeing best with the others first (the proxy)."""
    if len(cols) <= 1:
        return cols
    sub = LatencyTable(table.archs, tuple(table.devices[j] for j in cols), table.ms[:, cols])
    agree = monotonicity(sub).mean_agreement
    return [cols[i] for i in np.argsort(-np.nan_to_num(agree, nan=-2.0), kind="stable")]


def fill_table(
    table: LatencyTable,
    space: SearchSpace,
    method: Optional[str] = None,
    proxy: Optional[str] = None,
    with_error: bool = True,
    predictor: Optional[crossdevice.TrainedPredictor] = None,
) -> tuple[LatencyTable, FillReport]:
    """Fill ``table``; ``with_error`` also estimates each predicted column's error (slower).

    ``method`` None: ``crossdevice`` for columns with every probe measured (with
    ``predictor``, or the one shipped for ``space``), ``fleet`` for the others."""
    table.validate_archs(space)
    if method is not None:
        predictors.make(method)  # an unknown --method fails before any work
    trained = _cross_device_model(space, method, proxy, predictor)
    report = FillReport()
    logs = np.log(table.ms)
    out = logs.copy()
    base = Design.build(space, table.archs, None)
    d = len(table.devices)
    counts = table.measured.sum(axis=0)

    if proxy is not None:
        p = table.device_index(proxy)
        if counts[p] < len(table.archs):
            if counts[p] < MIN_ADAPT:
                raise NotEnoughDataError(
                    f"--proxy {proxy} has only {counts[p]} measured architectures; a proxy should be "
                    "measured on (nearly) all of them"
                )
            lut = predictors.LookupTable().fit(base, logs[:, p])
            out[:, p] = np.where(np.isnan(logs[:, p]), lut.predict(base), logs[:, p])
            report.method[proxy] = "lut on its own cells"
            report.warnings.append(
                f"proxy {proxy} has {len(table.archs) - counts[p]} missing cells, filled from its own "
                "lookup table before it serves as the proxy"
            )
        refs = [p]
        order = [j for j in range(d) if j != p]
    else:
        refs = order_by_agreement(table, table.fully_measured())
        dense = [j for j in range(d) if j not in refs and counts[j] >= DENSE_SHARE * len(table.archs)]
        sparse = [j for j in range(d) if j not in refs and j not in dense]
        order = sorted(dense, key=lambda j: -counts[j]) + sparse
    report.proxy = table.devices[refs[0]] if refs else None
    report.references = [table.devices[j] for j in refs]

    for j in order:
        name = table.devices[j]
        if counts[j] == len(table.archs):
            report.method[name] = "measured"
            continue
        y = logs[:, j]
        ref_cols = list(refs)
        design = base.with_refs(out[:, ref_cols]) if ref_cols else base
        if trained is not None and _use_cross_device(trained, table, y, name, method):
            cross = crossdevice.CrossDevice(trained).fit(base, y)
            pred = cross.predict(base)
            n_probes = len(trained.probes)
            report.method[name] = f"crossdevice from {n_probes} probes + {counts[j] - n_probes} samples"
            if with_error:
                report.log_error[name] = uncertainty.cv_log_error(cross, base, y)
        elif counts[j] < MIN_ADAPT:
            pred = _fallback(design, y, name, report)
        elif not ref_cols:
            lut = predictors.LookupTable().fit(base, y)
            pred = lut.predict(base)
            report.method[name] = "lut (no fully measured reference device)"
            if with_error:
                report.log_error[name] = uncertainty.cv_log_error(lut, base, y)
        else:
            col_method = method or predictors.DEFAULT_METHOD
            est = predictors.make(col_method).fit(design, y)
            pred = est.predict(design)
            report.method[name] = f"{col_method} from {', '.join(table.devices[r] for r in ref_cols)}"
            if with_error:
                report.log_error[name] = uncertainty.cv_log_error(est, design, y)
        out[:, j] = np.where(np.isnan(y), pred, y)
        if proxy is None and counts[j] >= DENSE_SHARE * len(table.archs):
            refs.append(j)  # completed dense columns help the sparser ones
    filled = np.where(table.measured, table.ms, np.exp(out))
    return LatencyTable(table.archs, table.devices, filled), report


def _cross_device_model(
    space: SearchSpace,
    method: Optional[str],
    proxy: Optional[str],
    given: Optional[crossdevice.TrainedPredictor],
) -> Optional[crossdevice.TrainedPredictor]:
    """The cross-device predictor this fill may use, or None."""
    if method not in (None, predictors.CROSS_DEVICE) or (method is None and proxy is not None):
        return None
    trained = given or crossdevice.shipped(space.name)
    if trained is None and method == predictors.CROSS_DEVICE:
        raise ModelFileError(
            f"no cross-device predictor is shipped for {space.name}; give one trained with "
            "`fleetbench train-predictor`"
        )
    if trained is not None and trained.space != space.name:
        raise ModelFileError(f"predictor model {trained.path!r} is for {trained.space}, not {space.name}")
    return trained


def _use_cross_device(
    trained: crossdevice.TrainedPredictor,
    table: LatencyTable,
    y: np.ndarray,
    name: str,
    method: Optional[str],
) -> bool:
    have = crossdevice.probes_measured(trained, table.archs, y)
    if have == len(trained.probes):
        return True
    if method == predictors.CROSS_DEVICE:
        raise NotEnoughDataError(
            f"device {name} has {have} of the {len(trained.probes)} probe architectures measured; the "
            f"crossdevice method needs them all (`fleetbench probes --space {trained.space}` lists them)"
        )
    return False


def _fallback(design: Design, y: np.ndarray, name: str, report: FillReport) -> np.ndarray:
    n_meas = int((~np.isnan(y)).sum())
    if design.refs.shape[1] == 0:
        raise NotEnoughDataError(
            f"device {name} has {n_meas} measured architecture(s) and there is no fully measured "
            "device to fall back on; measure at least 3"
        )
    proxy = design.refs[:, 0]
    shift = float(np.nanmean(y - proxy)) if n_meas else 0.0
    report.method[name] = "proxy ranking (not adapted)"
    report.warnings.append(
        f"device {name} has {n_meas} measured architecture(s), too few to adapt (needs {MIN_ADAPT}): "
        f"its column is the proxy's ranking"
        + (", scaled to that measurement" if n_meas else ", in the proxy's milliseconds")
    )
    return proxy + shift
