"""Plots of training runs, written as PNG files."""

import os

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on machines without a display
import matplotlib.pyplot as plt


def plot_loss_curves(log_history: list[dict], path: str | os.PathLike) -> None:
    """Training and eval loss against the training step, from `Trainer.state.log_history`."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label, style in [(train, "train", "-"), (evaluation, "eval", "o-")]:
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Pre-training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
