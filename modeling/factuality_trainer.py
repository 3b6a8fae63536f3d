"""An `SFTTrainer` whose evaluations also score factuality: at every evaluation the model answers question sets
(the world's held-out splits, the fine-tune set itself) with the `factuality` metric, and the figures join the
evaluation metrics under `eval_` names.

They are added inside `evaluation_loop`, before the Trainer logs the metrics and calls the callbacks' `on_evaluate`,
so they land in the log history, `trainer_state.json` and every `report_to` logger, and can drive
`metric_for_best_model`, `load_best_model_at_end` and transformers' own `EarlyStoppingCallback`.
"""

import datasets
from trl import SFTTrainer

from .scoring import score_questions

# The metric's figures that go into the evaluation metrics (the counts stay in score_questions' reports).
FIGURES = ("accuracy", "hallucination_rate", "abstention_rate", "exact_match", "auroc")


class FactualitySFTTrainer(SFTTrainer):
    """`SFTTrainer` that scores `factuality_sets` at each evaluation.

    Args:
        factuality_sets: name -> question rows with the columns of the world's QA splits (`prompt`, `answer` as the
            reference, `knowledge`). Each figure appears as `eval_{name}_{figure}`, and per knowledge category as
            `eval_{name}_{category}_{figure}`, e.g. `eval_qa_unknown_heldout_hallucination_rate`.
        *args, **kwargs: as for `SFTTrainer`.
    """

    def __init__(self, *args, factuality_sets: dict[str, datasets.Dataset] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.factuality_sets = factuality_sets or {}

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        model = self.accelerator.unwrap_model(self.model)
        training = model.training
        for name, questions in self.factuality_sets.items():
            report = score_questions(model, self.processing_class, questions, self.args.per_device_eval_batch_size)
            scores = {name: report["metrics"], **{f"{name}_{c}": m for c, m in report["by_knowledge"].items()}}
            for key, metrics in scores.items():
                output.metrics.update(
                    {f"{metric_key_prefix}_{key}_{figure}": metrics[figure] for figure in FIGURES if figure in metrics}
                )
        model.train(training)  # scoring switches to eval mode; the training loop expects its mode back
        return output


__all__ = ["FIGURES", "FactualitySFTTrainer"]
