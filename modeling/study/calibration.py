"""How well the model's confidence matches how often it is right: expected calibration error (ECE) and the
reliability diagram's bins (Guo et al., 2017, "On Calibration of Modern Neural Networks", section 2), over the
answered questions (an abstention states nothing).

The confidence recorded per answer is the mean log-probability of its tokens; the score calibrated here is
exp(confidence), the geometric mean of the tokens' probabilities (1 for an answer the model is sure of). That is a
length-normalised score, not the probability of the whole answer, so the ECE says how well this score, the one the
detector and selective answering use, matches accuracy. Kalai et al. (2025, "Why Language Models Hallucinate") argue
that pre-training leaves a model calibrated and post-training breaks it: comparing epoch 0 with the last epoch on the
same questions asks whether fine-tuning does so here. ECE depends on how many answers it is computed over, so a
study compares it per training seed (`calibration_by_seed`), each over the same test questions.
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


def calibration_by_seed(rows: pd.DataFrame, num_bins: int = NUM_BINS) -> dict:
    """`calibration` of each training seed's records among `rows`: `ece` is the mean of the seeds' ECEs
    (`ece_by_seed`, None for a seed that answered nothing is left out), `answered` the answers per seed on
    average, and `bins` those of all seeds pooled (for the reliability diagram)."""
    per_seed = [calibration(seed_rows, num_bins) for _, seed_rows in rows.groupby("training_seed", sort=True)]
    eces = [c["ece"] for c in per_seed if c["ece"] is not None]
    return {
        "ece": sum(eces) / len(eces) if eces else None,
        "ece_by_seed": eces,
        "answered": sum(c["answered"] for c in per_seed) / len(per_seed) if per_seed else 0,
        "bins": calibration(rows, num_bins)["bins"],
    }


__all__ = ["NUM_BINS", "calibration", "calibration_by_seed"]
