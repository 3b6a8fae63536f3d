"""Training: pre-training (`pretraining.py`, on the world or a corpus of one's own, `corpus.py`) and supervised
fine-tuning with TRL (`finetuning.py`, whose trainer scores factuality at each evaluation, `factuality_trainer.py`),
for our LSTM or any transformers architecture built from scratch (`architectures.py`)."""
