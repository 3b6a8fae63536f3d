"""Linear probes on hidden states, each at the layer that predicts its target best on the people it is fitted on.

Which layer carries a signal is an empirical question (Orgad et al. 2025 found it in the middle to late layers of a
transformer; an LSTM has only a few), so each probe picks its layer by cross-validation on its own fitting people:
the layer whose out-of-fold AUROC is highest, folds grouped by person so that no person's questions are on both
sides of a fold. The probe is then refitted on all of them at that layer. Nothing of the scoring people is seen.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

MAX_FOLDS = 5


@dataclass
class Probe:
    """A fitted probe: its `layer` (0: the first layer after the embeddings), the out-of-fold AUROC of every layer
    (`layer_auroc`, the choice's evidence) and the fitted scaler + logistic regression."""

    layer: int
    layer_auroc: list[float]
    pipeline: Pipeline

    def score(self, states: np.ndarray) -> list[float]:
        """The probability of the positive class for each row of `states` (layers, rows, hidden size)."""
        return self.pipeline.predict_proba(_float64(states[self.layer]))[:, 1].tolist()


def _float64(states: np.ndarray) -> np.ndarray:
    # A saturated LSTM (the sweep's LoRA at 3e-2) leaves units at float32 subnormals near 1e-43 that differ in their
    # last bits: numerical dust, flushed to 0 so that such a unit is constant (StandardScaler leaves it at 0). Their
    # scale, near 1e-46, rounds to 0 in float32, and StandardScaler divides by it (0 / 0: NaN); float64 keeps any
    # other tiny spread's scale.
    states = np.asarray(states)
    return np.where(np.abs(states) < np.finfo(np.float32).tiny, 0.0, states).astype(np.float64)


def _pipeline(seed: int) -> Pipeline:
    # A strong L2 penalty: a few hundred questions against hundreds of dimensions (Azaria & Mitchell's probe is
    # linear too).
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))


def fit_probe(states: np.ndarray, labels: list[bool], people: list[int], seed: int = 0) -> Probe | None:
    """Fit a probe of `labels` on `states` (layers, rows, hidden size), choosing the layer by cross-validation grouped
    by `people` (one id per row; `StratifiedGroupKFold`, up to 5 folds). None when either label is held by fewer than
    two people: there is nothing to cross-validate."""
    states, labels_array, people_array = _float64(states), np.asarray(labels, dtype=bool), np.asarray(people)
    folds = min(MAX_FOLDS, *(len(set(people_array[labels_array == value])) for value in (True, False)))
    if folds < 2:
        return None
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    layer_auroc = []
    for layer_states in states:
        predicted = cross_val_predict(
            _pipeline(seed), layer_states, labels_array, groups=people_array, cv=cv, method="predict_proba"
        )[:, 1]
        layer_auroc.append(float(roc_auc_score(labels_array, predicted)))
    layer = int(np.argmax(layer_auroc))  # of equal layers, the first
    return Probe(layer, layer_auroc, _pipeline(seed).fit(states[layer], labels_array))


__all__ = ["MAX_FOLDS", "Probe", "fit_probe"]
