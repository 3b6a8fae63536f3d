"""The study that shows, measures and reduces fine-tuning hallucination (see docs/study.md): pre-train on a world's
biographies, probe what the model knows, fine-tune under a grid of conditions and mitigations, and report."""

from .config import Condition, StudyArguments, plan_conditions
from .runner import run_study
from .sweep import SweepArguments, run_sweep

__all__ = ["Condition", "StudyArguments", "SweepArguments", "plan_conditions", "run_study", "run_sweep"]
