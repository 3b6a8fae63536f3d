"""How well the model's confidence matches how often it is right: expected calibration error (ECE) and the
reliability diagram's bins (Guo et al., 2017, "On Calibration of Modern Neural Networks", section 2), over the
answered questions (an abstention states nothing).

The confidence recorded per answer is the mean log-probability of its tokens; as a probability it is
exp(confidence), the geometric mean of the tokens' probabilities (1 for an answer the model is sure of). Kalai et al.
(2025, "Why Language Models Hallucinate") argue that pre-training leaves a model calibrated and post-training breaks
it: comparing epoch 0 with the last epoch on the same questions asks whether fine-tuning does so here.
"""

import numpy as np
import pandas as pd

NUM_BINS = 10


def calibration(rows: pd.DataFrame, num_bins: int = NUM_BINS) -> dict:
    """ECE and reliability bins of `rows` (records): `{"ece", "answered", "bins": [{"low", "high", "count",
    "confidence", "accuracy"}, ...]}` over `num_bins` equal-width bins of exp(confidence) in [0, 1] (empty bins left
    out); ECE = sum over bins of count / answered * |accuracy - mean confidence|, None when nothing is answered."""
    answered = rows[rows["verdict"] != "abstained"]
    probability = np.exp(answered["confidence"].to_numpy())
    correct = (answered["verdict"] == "correct").to_numpy(dtype=float)
    # A probability of exactly 1 belongs to the last bin.
    bins = np.minimum((probability * num_bins).astype(int), num_bins - 1)
    out, ece = [], 0.0
    for index in range(num_bins):
        inside = bins == index
        count = int(inside.sum())
        if count:
            confidence, accuracy = float(probability[inside].mean()), float(correct[inside].mean())
            ece += count / len(answered) * abs(accuracy - confidence)
            out.append({"low": index / num_bins, "high": (index + 1) / num_bins, "count": count,
                        "confidence": confidence, "accuracy": accuracy})  # fmt: skip
    return {"ece": ece if len(answered) else None, "answered": len(answered), "bins": out}


__all__ = ["NUM_BINS", "calibration"]
