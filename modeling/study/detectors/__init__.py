"""The model's own signals as a hallucination detector: hidden states, probes, semantic entropy, their evaluation on
held-out people (`evaluation.py`) and selective answering (`selective.py`)."""

from .evaluation import DETECTORS, SCORE_FIELDS, detector_scores, summarize_detectors
from .hidden_states import read_states
from .probes import Probe, fit_probe
from .selective import auroc, choose_threshold, risk_coverage
from .semantic_entropy import high_entropy_labels, meanings, semantic_entropy

__all__ = [
    "DETECTORS",
    "SCORE_FIELDS",
    "Probe",
    "auroc",
    "choose_threshold",
    "detector_scores",
    "fit_probe",
    "high_entropy_labels",
    "meanings",
    "read_states",
    "risk_coverage",
    "semantic_entropy",
    "summarize_detectors",
]
