"""The study that shows, measures and reduces fine-tuning hallucination (see README): pre-train on a world's
biographies, probe what the model knows, fine-tune under a grid of conditions and mitigations, and report."""

from .config import Condition, StudyArguments, plan_conditions
from .runner import run_study

__all__ = ["Condition", "StudyArguments", "plan_conditions", "run_study"]
