"""An `SFTTrainer` whose evaluations also score factuality: at every evaluation the model answers question sets
(the world's held-out splits, the fine-tune set itself) with the `factuality` metric, and the figures join the
evaluation metrics under `eval_` names.

They are added inside `evaluation_loop`, before the Trainer logs the metrics and calls the callbacks' `on_evaluate`,
so they land in the log history, `trainer_state.json` and every `report_to` logger, and can drive
`metric_for_best_model`, `load_best_model_at_end` and transformers' own `EarlyStoppingCallback`.
"""

import contextlib
from collections.abc import Iterator

import datasets
import torch
import torch.nn.functional as F
import trl.trainer.utils as trl_utils
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments
from transformers.trainer_callback import ExportableState
from trl import SFTTrainer

from ..scoring import answer_questions, score_answers
from .kl_penalty import Reference, kl_to_reference, position_mask
from .precision import float32_forward

# The metric's figures that go into the evaluation metrics (the counts stay in score_answers' reports).
FIGURES = ("accuracy", "hallucination_rate", "abstention_rate", "exact_match", "auroc")
# Figures that are NaN at some evaluations: AUROC needs both a right and a hallucinated answer in the set.
UNDEFINED_AT_TIMES = ("auroc",)


@contextlib.contextmanager
def fused_head_on_labelled_positions() -> Iterator[None]:
    """Inside the block, TRL's fused LM head (`trl.trainer.utils.add_fused_lm_head`, which `SFTTrainer` puts on every
    model it trains) projects only the positions that have a label on a CPU too, as it does on Triton devices.

    Elsewhere TRL projects every position (a fixed tile shape spares compiled kernels a recompilation per batch), so
    on a CPU, where nothing is compiled, a question's prompt and padding cost as much as its answer: in the study,
    13% of the positions have a label, and its training steps ran 1.5x as long in bfloat16 autocast (the backward's
    two products with the head run in float32 there) and 1.2x in float32. The loss and gradients are sums over the
    same labelled positions (the float32 study's figures came out the same; in bfloat16 the products' other shapes
    round differently).

    The switch TRL reads (a private module global, hence trl's upper bound in pyproject.toml) is swapped for the
    block only and restored on any exit; the swap is process-wide, so it is not for threads that train at once. A TRL
    without the switch is left as it is.
    """
    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        yield
        return
    trl_utils._use_triton = lambda device: original(device) or device.type == "cpu"
    try:
        yield
    finally:
        trl_utils._use_triton = original


def check_metric_for_best_model(metric: str | None) -> None:
    """Refuse a `metric_for_best_model` that can be undefined: a NaN never compares better than anything, so the
    Trainer would record no best (`best_model_checkpoint` None), keep the last model under `load_best_model_at_end`
    without a word, and `EarlyStoppingCallback` would count every undefined evaluation as one without improvement.

    Raises:
        ValueError: naming the metric and why, for any of the `UNDEFINED_AT_TIMES` figures.
    """
    if metric is not None and metric.endswith(tuple(f"_{figure}" for figure in UNDEFINED_AT_TIMES)):
        raise ValueError(
            f"metric_for_best_model={metric!r} is undefined (NaN) at every evaluation whose set has only right or only "
            "wrong answers, so no best model could be chosen by it: choose by accuracy, exact_match, "
            "hallucination_rate, abstention_rate or eval_loss"
        )


class FactualitySFTTrainer(SFTTrainer):
    """`SFTTrainer` that scores `factuality_sets` at each evaluation.

    Args:
        factuality_sets: name -> question rows with the columns of the world's QA splits (`prompt`, `answer` as the
            reference, `knowledge`). Each figure appears as `eval_{name}_{figure}`, and per knowledge category as
            `eval_{name}_{category}_{figure}`, e.g. `eval_qa_unknown_heldout_hallucination_rate`.
        base_model_record: for a LoRA run, `modeling.adapters.base_model_record` of the plain model before PEFT
            wrapped it, saved with the adapter (the trainer's own model is the PeftModel, whose names differ).
        kl_coef: weight of the KL penalty toward the model as it is when the trainer is built (the pre-trained
            one), added to the training loss; 0 for none. See `modeling.training.kl_penalty`.
        kl_positions: where the penalty applies: "completion", "prompt" or "all".
        *args, **kwargs: as for `SFTTrainer`.
    """

    def __init__(
        self,
        *args,
        factuality_sets: dict[str, datasets.Dataset] | None = None,
        base_model_record: dict[str, str] | None = None,
        kl_coef: float = 0.0,
        kl_positions: str = "completion",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.kl_coef, self.kl_positions = kl_coef, kl_positions
        # After PEFT wrapped the model (an adapter run's reference is itself with the adapters off), before training.
        self.reference = Reference(self.model) if kl_coef else None
        check_metric_for_best_model(self.args.metric_for_best_model)
        self.factuality_sets = factuality_sets or {}
        self.base_model_record = base_model_record
        # The answers of every evaluation, in order: {"step": optimizer step, "epoch": epoch (float),
        # "sets": {name: score_answers' answers}}, the study's per-answer records.
        self.answer_history: list[dict] = []

    @property
    def latest_answers(self) -> dict | None:
        """The answers of the latest evaluation (an entry of `answer_history`), None before the first."""
        return self.answer_history[-1] if self.answer_history else None

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`, but a run resumed with stateful callbacks (e.g. `EarlyStoppingCallback`'s patience count)
        must restore their state, so that it goes on as the interrupted run would have.

        Raises:
            ValueError: when resuming with such callbacks and `restore_callback_states_from_checkpoint` off
                (transformers' default; the defaults of `modeling.training.finetuning` turn it on).
        """
        stateful = [type(c).__name__ for c in self.callback_handler.callbacks if isinstance(c, ExportableState)]
        if resume_from_checkpoint and stateful and not self.args.restore_callback_states_from_checkpoint:
            raise ValueError(
                f"Resuming with {', '.join(stateful)} but restore_callback_states_from_checkpoint is off: their "
                "state (e.g. the early-stopping patience count) would restart, and the run would not go on as the "
                "interrupted one. Set restore_callback_states_from_checkpoint=True"
            )
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`SFTTrainer.compute_loss`, its LM head on the labelled positions only (`fused_head_on_labelled_positions`).
        With `kl_coef`, while training, the same token-level SFT loss computed here from one forward that keeps its
        logits, plus `kl_coef` times the KL to the reference summed over its positions (`kl_penalty`), both divided
        by the completion tokens of the batch and scaled over the processes as TRL scales its loss. The mean KL per
        position is logged as `kl_to_pretrained`."""
        if not (self.kl_coef and model.training):
            with fused_head_on_labelled_positions():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels, attention_mask = inputs["labels"], inputs["attention_mask"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
        targets = labels[:, 1:]
        nll = F.cross_entropy(
            outputs.logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"
        )
        reference_logits = self.reference.logits(
            self.accelerator.unwrap_model(model), inputs["input_ids"], attention_mask
        )
        kl = kl_to_reference(outputs.logits, reference_logits, position_mask(labels, attention_mask, self.kl_positions))
        num_tokens = (targets != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = (nll + self.kl_coef * kl.sum()) / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        totals = self.accelerator.gather_for_metrics(torch.stack([kl.detach().sum(), torch.tensor(float(len(kl)))]))
        totals = totals.view(-1, 2).sum(dim=0)
        self._metrics["train"]["kl_to_pretrained"].append((totals[0] / totals[1].clamp(min=1)).item())
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if not self.factuality_sets:
            return output
        model = self.accelerator.unwrap_model(self.model)
        training = model.training
        with float32_forward(model):  # what the saved model would answer, whatever precision trains it
            reports = score_question_sets(model, self.processing_class, self.factuality_sets, self.args)
        model.train(training)  # scoring switches to eval mode; the training loop expects its mode back
        for name, report in reports.items():
            scores = {name: report["metrics"], **{f"{name}_{c}": m for c, m in report["by_knowledge"].items()}}
            for key, metrics in scores.items():
                output.metrics.update(
                    {f"{metric_key_prefix}_{key}_{figure}": metrics[figure] for figure in FIGURES if figure in metrics}
                )
        self.answer_history.append(
            {
                "step": self.state.global_step,
                "epoch": self.state.epoch or 0.0,
                "sets": {name: report["answers"] for name, report in reports.items()},
            }
        )
        return output


def score_question_sets(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    question_sets: dict[str, datasets.Dataset],
    args: TrainingArguments,
) -> dict[str, dict]:
    """`score_answers` of each of `question_sets` (name -> QA rows), from one `answer_questions` call over all of
    them, in batches of `args.per_device_eval_batch_size` (one call keeps every batch full)."""
    names = list(question_sets)
    prompts = [prompt for name in names for prompt in question_sets[name]["prompt"]]
    predictions, confidences = answer_questions(model, tokenizer, prompts, args.per_device_eval_batch_size)
    reports, start = {}, 0
    for name in names:
        end = start + len(question_sets[name])
        reports[name] = score_answers(question_sets[name], predictions[start:end], confidences[start:end])
        start = end
    return reports


__all__ = [
    "FIGURES",
    "FactualitySFTTrainer",
    "check_metric_for_best_model",
    "fused_head_on_labelled_positions",
    "score_question_sets",
]
