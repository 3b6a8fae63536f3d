"""What the model holds inside when it answers: every layer's hidden state at the question's last token (before it
answers) and at its first answer token (once it has begun to answer), for the hidden-state probes."""

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...scoring import left_padded_batches


def _layer_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The forward pass of left-padded rows: (logits at the last position (B, V), each layer's hidden state at the
    last position (L, B, H)), the embeddings left out."""
    # Positions counted from each row's first real token, as generate() does: a transformer would otherwise read a
    # left-padded prompt at shifted positions (a recurrent model takes no positions and ignores them).
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
    )
    return output.logits[:, -1], torch.stack([states[:, -1] for states in output.hidden_states[1:]])


@torch.inference_mode()
def read_states(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Every layer's hidden state of each prompt at two places, as float32 arrays of shape (layers, len(prompts),
    hidden size), the embedding layer left out (index 0 is the first LSTM layer or transformer block):

    - `question`: at the prompt's last token, before the model answers (Kadavath et al. 2022's P(IK) position);
    - `answer`: at the answer's first token, the model's greedy choice after the prompt, once read (Orgad et al.
      2025, "LLMs Know More Than They Show", found the answer's tokens carry the most signal); for a greedy answer
      this is the first token the model generated.
    """
    model.eval()
    question, answer = [], []
    for batch in left_padded_batches(tokenizer, prompts, batch_size, model.device):
        logits, states = _layer_states(model, batch["input_ids"], batch["attention_mask"])
        first = logits.argmax(-1, keepdim=True)
        question.append(states.float().cpu().numpy())
        _, states = _layer_states(
            model,
            torch.cat([batch["input_ids"], first], dim=1),
            torch.cat([batch["attention_mask"], torch.ones_like(first)], dim=1),
        )
        answer.append(states.float().cpu().numpy())
    return {"question": np.concatenate(question, axis=1), "answer": np.concatenate(answer, axis=1)}


__all__ = ["read_states"]
