"""What a training run shows on the console: one progress bar over its optimizer steps (its postfix the latest
training loss) and one line per evaluation.

The Trainer's own console output (`ProgressCallback`, or `PrinterCallback` with `disable_tqdm`) prints every logged
dict: about 70 figures per evaluation of a fine-tuning with factuality sets, and a bar per evaluation. Those figures
still reach the log history (`trainer_state.json`, each run's `log_history.json`) and every `report_to` tracker
(TensorBoard, ...), whose callbacks this leaves alone.
"""

from collections.abc import Callable, Sequence

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainerState

# One evaluation's line from the trainer state and the evaluation's metrics (keys `eval_...`).
Summary = Callable[[TrainerState, dict[str, float]], str]


class ConsoleProgress(TrainerCallback):
    """A bar over the optimizer steps and `summary`'s line per evaluation during training (main process only)."""

    def __init__(self, summary: Summary):
        self.summary = summary
        self.bar: tqdm | None = None
        self.training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = state.is_world_process_zero
        if self.training:
            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, dynamic_ncols=True, disable=args.disable_tqdm
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and "loss" in (logs or {}):
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # An evaluation after training (the figures a run reports) is the caller's to print.
        if self.training and metrics:
            tqdm.write(self.summary(state, metrics))  # above the bar, which stays whole below it

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
        self.bar, self.training = None, False


def use_console_progress(trainer: Trainer, summary: Summary) -> None:
    """Give `trainer` a `ConsoleProgress` with `summary`, in place of the Trainer's printing callbacks (and of an
    earlier `ConsoleProgress`)."""
    for callback in (ProgressCallback, PrinterCallback, ConsoleProgress):
        trainer.remove_callback(callback)
    trainer.add_callback(ConsoleProgress(summary))


def loss_summary(prefix: str) -> Summary:
    """`prefix: epoch E: eval loss L`, the line of an evaluation that takes only the loss (pre-training)."""
    return lambda state, metrics: f"{prefix}: epoch {state.epoch:.0f}: eval loss {metrics['eval_loss']:.3f}"


def factuality_summary(prefix: str, sets: Sequence[str]) -> Summary:
    """`prefix: epoch E: eval loss L; <set> accuracy A, hallucination H, abstention B; ...` over the factuality
    `sets` an evaluation scored (see `FactualitySFTTrainer`)."""

    def summary(state: TrainerState, metrics: dict[str, float]) -> str:
        parts = [f"{prefix}: epoch {state.epoch:.0f}: eval loss {metrics['eval_loss']:.3f}"]
        for name in sets:
            if f"eval_{name}_accuracy" in metrics:
                parts.append(
                    f"{name} accuracy {metrics[f'eval_{name}_accuracy']:.2f}, hallucination "
                    f"{metrics[f'eval_{name}_hallucination_rate']:.2f}, abstention "
                    f"{metrics[f'eval_{name}_abstention_rate']:.2f}"
                )
        return "; ".join(parts)

    return summary


__all__ = ["ConsoleProgress", "factuality_summary", "loss_summary", "use_console_progress"]
