"""Anomaly-detection domain: detectors retrained on the data they let through.

``AnomalyLoop`` is registered as ``anomaly`` (``domains.anomaly:AnomalyLoop``); see
:mod:`domains.anomaly.loop` for how the loop maps onto stabfw, :mod:`domains.anomaly.data`
for the datasets and splits, :mod:`domains.anomaly.detectors` for the detectors.
"""

from stabfw.domains.anomaly.data import LabelledBatch, Split, StreamStats
from stabfw.domains.anomaly.detectors import DETECTORS, Detector, make_detector
from stabfw.domains.anomaly.loop import AnomalyLoop, DetectorState, recall_at_fpr

__all__ = [
    "DETECTORS",
    "AnomalyLoop",
    "Detector",
    "DetectorState",
    "LabelledBatch",
    "Split",
    "StreamStats",
    "make_detector",
    "recall_at_fpr",
]
