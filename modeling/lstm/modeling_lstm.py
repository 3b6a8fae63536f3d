"""LSTM language model: embeddings, a stack of `torch.nn.LSTM` layers and a (tied) language-model head.

The recurrent state travels as an [`LSTMCache`] under the name `cache` (the keyword and output field transformers
5.24 uses for recurrent models), so `generate()` feeds one token per step after the prompt.
"""

import functools
import json
import os
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_lstm import LSTMConfig


class LSTMCache:
    """
    Recurrent state of every layer after the tokens seen so far: `h` and `c`, each `(num_layers, batch, hidden_size)`
    (the layout of `torch.nn.LSTM`'s `(h_n, c_n)`). A forward never changes the cache it was given; it returns a new
    one, so one prompt's cache can seed several continuations.
    """

    is_compileable = False

    def __init__(self, h: torch.Tensor, c: torch.Tensor, seen_tokens: int = 0):
        if h.shape != c.shape or h.dim() != 3:
            raise ValueError(
                f"LSTMCache needs h and c of one shape (num_layers, batch, hidden), got {h.shape}, {c.shape}"
            )
        self.h = h
        self.c = c
        self.seen_tokens = seen_tokens

    @classmethod
    def zeros(cls, config: LSTMConfig, batch_size: int, device: torch.device, dtype: torch.dtype) -> "LSTMCache":
        h = torch.zeros(config.num_layers, batch_size, config.hidden_size, device=device, dtype=dtype)
        return cls(h, torch.zeros_like(h))

    @property
    def is_linear(self) -> list[bool]:
        # generate() slices a full-sequence `input_ids` down to the tokens a cache has not seen only for caches whose
        # layers are not "linear"; this state does know how many tokens it has seen, so it takes part.
        return [False] * self.h.shape[0]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of token positions (padding included) the state has consumed."""
        return self.seen_tokens

    def repeat_interleave(self, repeats: int) -> "LSTMCache":
        """The cache of a batch whose every row is repeated `repeats` times (beams, several return sequences)."""
        return LSTMCache(self.h.repeat_interleave(repeats, 1), self.c.repeat_interleave(repeats, 1), self.seen_tokens)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search keeps the beams in `beam_idx`; their states must follow them."""
        self.h = self.h.index_select(1, beam_idx.to(self.h.device))
        self.c = self.c.index_select(1, beam_idx.to(self.c.device))

    def __repr__(self) -> str:
        return f"LSTMCache(layers={self.h.shape[0]}, batch={self.h.shape[1]}, seen_tokens={self.seen_tokens})"


class LSTMLayer(nn.LSTM):
    """A one-layer `torch.nn.LSTM` that runs a single time step on the CPU with `torch.lstm_cell`.

    For one token, oneDNN's per-call setup costs ~5x the step itself (2.7 ms vs 0.5 ms for three layers of 256,
    measured), and only the process-wide `torch.backends.mkldnn.enabled` flag turns it off, which is not ours to
    flip inside a forward. `torch.lstm_cell` is the native kernel's own cell: the same numbers without the setup.
    The step runs inside this module's forward so that weights adapted by PEFT (LoRA on `weight_ih_l0` and
    `weight_hh_l0` via `target_parameters`) are read with their adapters applied.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size, batch_first=True)

    def forward(self, input, hx=None):
        if isinstance(input, torch.Tensor) and input.shape[1] == 1 and input.device.type == "cpu" and hx is not None:
            # input: (B, 1, E); hx: 2 x (1, B, H)
            weights = (self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)
            h, c = torch.lstm_cell(input[:, 0], (hx[0][0], hx[1][0]), *weights)  # (B, H) each
            return h.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0))
        if torch.is_autocast_enabled("cpu") and self.weight_ih_l0.device.type == "cpu" and not cpu_autocast_lstm_runs():
            # Below AVX-512, oneDNN has no LSTM for autocast's bfloat16 and fails; the recurrence runs in float32 there
            # (the layers around it keep autocast).
            with torch.autocast("cpu", enabled=False):
                return super().forward(input.float(), None if hx is None else tuple(t.float() for t in hx))
        return super().forward(input, hx)


@functools.cache
def cpu_autocast_lstm_runs() -> bool:
    """Whether `torch.nn.LSTM` runs under CPU autocast (bfloat16) on this machine: oneDNN's LSTM does from AVX-512
    on, and fails to build its kernel on AVX2 CPUs (or where `ONEDNN_MAX_CPU_ISA` caps it there). Tried once."""
    lstm = nn.LSTM(1, 1)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    return True


class LSTMBlock(GradientCheckpointingLayer):
    """One LSTM layer. Tensors go in positionally so gradient checkpointing sees them."""

    def __init__(self, config: LSTMConfig, layer_idx: int):
        super().__init__()
        input_size = config.embedding_dim if layer_idx == 0 else config.hidden_size
        # One nn.LSTM per layer (not one with num_layers=N) gives per-layer hidden states and per-layer checkpointing,
        # while each call still takes the fused cuDNN / MKL-DNN kernel.
        self.lstm = LSTMLayer(input_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # hidden_states: (B, T, E); h0, c0: (1, B, H); lengths: (B,) real tokens per left-aligned row, on the CPU.
        if lengths is None:
            output, (h, c) = self.lstm(hidden_states, (h0, c0))
            return output, h, c
        packed = pack_padded_sequence(hidden_states, lengths, batch_first=True, enforce_sorted=False)
        output, (h, c) = self.lstm(packed, (h0, c0))
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=hidden_states.shape[1])
        return output, h, c  # (B, T, H), pad positions zero


def check_tokenizer_fits(config: PreTrainedConfig, folder: str) -> None:
    """Raise ValueError when the tokenizer saved in `folder` can produce ids the model cannot embed, or names other
    special tokens than the model's config (the signs of a tokenizer and a model from different runs). Any causal
    LM's config will do: it reads only `vocab_size`, `pad_token_id` and `eos_token_id`."""
    backend = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tokenizer_size = backend.get_vocab_size(with_added_tokens=True)
    if tokenizer_size > config.vocab_size:
        raise ValueError(
            f"The tokenizer in {folder} has {tokenizer_size} tokens but the model's vocab_size is {config.vocab_size}: "
            "they do not belong together (or call model.resize_token_embeddings(len(tokenizer)) before saving)"
        )
    tokenizer_config_file = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(tokenizer_config_file):
        return
    with open(tokenizer_config_file, encoding="utf-8") as f:
        special_tokens = json.load(f)
    for name in ("pad", "eos"):
        token = special_tokens.get(f"{name}_token")
        model_id = getattr(config, f"{name}_token_id")
        model_ids = model_id if isinstance(model_id, list) else [model_id]
        if isinstance(token, str) and model_id is not None and backend.token_to_id(token) not in model_ids:
            raise ValueError(
                f"The tokenizer in {folder} maps its {name} token {token!r} to id {backend.token_to_id(token)} but the "
                f"model's config says {name}_token_id={model_id}: the tokenizer does not belong to this model"
            )


class LSTMPreTrainedModel(PreTrainedModel):
    config_class = LSTMConfig
    config: LSTMConfig
    base_model_prefix = "model"
    _no_split_modules = ["LSTMBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True  # the state cannot be rewound, so assisted generation is off

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            bound = module.hidden_size**-0.5
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    init.uniform_(param, -bound, bound)
                else:
                    init.zeros_(param)
            # A forget-gate bias of 1 lets gradients flow through the cell early in training (Jozefowicz et al., 2015).
            # nn.LSTM orders gates (input, forget, cell, output); bias_ih and bias_hh are summed, so set only one.
            # The whole tensor goes through `init` so that weights loaded from a checkpoint are never overwritten.
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("bias_ih"):
                    forget_open = torch.zeros_like(param)
                    forget_open[hidden : 2 * hidden] = 1.0
                    init.copy_(param, forget_open)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with errors that name the file for corrupt weights, and a check that a
        tokenizer saved in the same folder fits the model."""
        folder = str(pretrained_model_name_or_path)
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except Exception as err:
            if type(err).__module__.startswith("safetensors") and os.path.isdir(folder):
                files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
                raise OSError(f"The weights in {folder} ({', '.join(files)}) are corrupt or truncated: {err}") from err
            raise
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            check_tokenizer_fits(model.config, folder)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        # Whichever class is saved, the folder loads as remote code with AutoModel and AutoModelForCausalLM alike
        # (transformers only maps the class being saved).
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoModel": "modeling_lstm.LSTMModel",
            "AutoModelForCausalLM": "modeling_lstm.LSTMForCausalLM",
        }
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a key/value DynamicCache for us: the first forward creates the LSTMCache.
        return False


@dataclass
class LSTMOutput(ModelOutput):
    r"""
    cache (`LSTMCache`, *optional*, returned when `use_cache=True`):
        Recurrent state after the last real token of every row; pass it back as `cache` to continue the sequences.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The embeddings, then the output of each LSTM layer, each `(batch, seq_len, width)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: LSTMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class LSTMCausalLMOutput(ModelOutput):
    r"""
    cache (`LSTMCache`, *optional*, returned when `use_cache=True`):
        Recurrent state after the last real token of every row; pass it back as `cache` to continue the sequences.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
        The embeddings, then the output of each LSTM layer, each `(batch, seq_len, width)`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: LSTMCache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class PaddingAlignment:
    """Where a padded batch's real tokens are: `align` moves each row's real tokens to the front (in order), so that
    the LSTM runs each row from its first real token; `unalign` puts the outputs back in place, zero at the pads.

    `packed`: the aligned rows run as packed sequences, so each row's final state is its last real token's (what a
    cache needs). Otherwise they run dense, pads included, through the fused kernel: a real position still sees only
    the real tokens before it, and the outputs after a row's end are zeroed by `unalign`. On the CPU, packed sequences
    take PyTorch's step-by-step path: a fine-tuning step of the default study's model on 64 questions took 1.8x as
    long packed in bfloat16 autocast on an AMX CPU, 1.2x in float32 there and 1.05x under AVX2 kernels (the "padded
    step" of `scripts/bench.py` measures it against a bare `nn.LSTM`).

    Rows with no real token are run on one pad token when packed (`pack_padded_sequence` rejects empty rows), on all
    of them when dense: `empty_rows` marks them, so that the caller zeroes their outputs (done here) and keeps their
    state.
    """

    def __init__(self, mask: torch.Tensor, packed: bool = True):
        self.mask = mask  # (B, T), True at real tokens
        self.packed = packed
        self.order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, T)
        lengths = mask.sum(dim=1).cpu()
        self.empty_rows = lengths == 0
        self.has_empty_rows = bool(self.empty_rows.any())
        self.lengths = lengths.clamp(min=1)

    @classmethod
    def of(cls, attention_mask: torch.Tensor | None, seq_len: int, packed: bool = True) -> "PaddingAlignment | None":
        """The alignment of the last `seq_len` columns of `attention_mask`; None when every token is real."""
        if attention_mask is None:
            return None
        mask = attention_mask[:, -seq_len:].bool()
        return None if bool(mask.all()) else cls(mask, packed)

    def align(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> the same rows, real tokens first."""
        return x.gather(1, self.order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))

    def unalign(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) aligned -> back to the original positions, zero at the pads."""
        x = torch.empty_like(x).scatter_(1, self.order.unsqueeze(-1).expand(-1, -1, x.shape[-1]), x)
        return x * self.mask.unsqueeze(-1) if self.has_empty_rows or not self.packed else x


class LSTMModel(LSTMPreTrainedModel):
    """Embeddings and the LSTM stack; `last_hidden_state` is exactly what the language-model head consumes."""

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.layers = nn.ModuleList([LSTMBlock(config, i) for i in range(config.num_layers)])
        self.dropout = nn.Dropout(config.dropout)
        # Only a tied head whose width differs from the LSTM's needs to be brought back to the embedding width.
        self.projection = (
            nn.Linear(config.hidden_size, config.embedding_dim, bias=False)
            if config.output_size != config.hidden_size
            else None
        )
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: LSTMCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | LSTMOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*):
            Token ids. Pass exactly one of `input_ids` and `inputs_embeds`.
        attention_mask (`torch.Tensor` of shape `(batch, past + seq_len)` or `(batch, seq_len)`, *optional*):
            1 for real tokens, 0 for padding, on either side. Padding never reaches a real token's state, so every real
            position gets the logits it would get with its sequence run alone. Only the last `seq_len` columns are
            read, so `generate()` may pass the mask of the whole sequence so far.
        inputs_embeds (`torch.FloatTensor` of shape `(batch, seq_len, embedding_dim)`, *optional*):
            Embedded tokens, instead of `input_ids`.
        cache (`LSTMCache`, *optional*):
            State to start from (zeros when absent), as returned by a previous call with `use_cache=True`, with
            `h` and `c` of shape `(num_layers, batch, hidden_size)`.

        Returns:
            `LSTMOutput` (or a tuple): `last_hidden_state` of shape `(batch, seq_len, output_size)` (zero at padded
            positions), the new `cache` when `use_cache`, and the `hidden_states` when `output_hidden_states`.

        Raises:
            ValueError: if both or neither of `input_ids` and `inputs_embeds` are given, or if `cache` holds another
                number of rows than the input.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")

        # 1. Embed.
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        batch_size, seq_len, _ = inputs_embeds.shape  # (B, T, E)
        if cache is None:
            cache = LSTMCache.zeros(self.config, batch_size, inputs_embeds.device, inputs_embeds.dtype)
        elif cache.h.shape[1] != batch_size:
            raise ValueError(f"cache holds {cache.h.shape[1]} rows but the input has {batch_size}")

        # 2. Padding: real tokens to the front; run packed only when the state after each row's last real token is
        # returned (an all-real batch, and any batch without a cache to return, take the fused dense path).
        padding = PaddingAlignment.of(attention_mask, seq_len, packed=use_cache)
        hidden_states = self.dropout(inputs_embeds)
        if padding is not None:
            hidden_states = padding.align(hidden_states)

        # 3. The LSTM stack, layer by layer from the cached state.
        all_hidden_states = (inputs_embeds,) if output_hidden_states else None
        hidden_states, new_h, new_c, all_hidden_states = self._run_layers(
            hidden_states, cache, padding, all_hidden_states
        )
        if padding is not None:
            hidden_states = padding.unalign(hidden_states)

        # 4. Bring a tied head's input to the embedding width.
        if self.projection is not None:
            hidden_states = self.projection(hidden_states)

        new_cache = self._next_cache(cache, new_h, new_c, padding, seq_len) if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, new_cache, all_hidden_states) if v is not None)
        return LSTMOutput(last_hidden_state=hidden_states, cache=new_cache, hidden_states=all_hidden_states)

    def _run_layers(
        self,
        hidden_states: torch.Tensor,
        cache: LSTMCache,
        padding: PaddingAlignment | None,
        all_hidden_states: tuple | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], tuple | None]:
        """Runs the stack on `hidden_states` (B, T, E), aligned by `padding`, from the state in `cache`.

        Returns the last layer's output (B, T, H), still aligned; each layer's final `h` and `c` (1, B, H), which are
        each row's state after its last real token only when `padding` runs packed (dense, they are the state after
        the pads too, and nobody reads them); and `all_hidden_states` with each layer's output, unaligned, appended
        (None stays None).
        """
        new_h, new_c = [], []
        lengths = padding.lengths if padding is not None and padding.packed else None
        for i, layer in enumerate(self.layers):
            hidden_states, h, c = layer(hidden_states, cache.h[i : i + 1], cache.c[i : i + 1], lengths)
            new_h.append(h)
            new_c.append(c)
            hidden_states = self.dropout(hidden_states)
            if all_hidden_states is not None:
                all_hidden_states += (padding.unalign(hidden_states) if padding is not None else hidden_states,)
        return hidden_states, new_h, new_c, all_hidden_states

    @staticmethod
    def _next_cache(
        cache: LSTMCache,
        new_h: list[torch.Tensor],
        new_c: list[torch.Tensor],
        padding: PaddingAlignment | None,
        seq_len: int,
    ) -> LSTMCache:
        """The state after this call, `seq_len` tokens on; a row that held only padding keeps the state it came with."""
        h, c = torch.cat(new_h), torch.cat(new_c)  # (L, B, H)
        if padding is not None and padding.has_empty_rows:
            keep = padding.empty_rows.to(h.device).view(1, -1, 1)
            h, c = torch.where(keep, cache.h, h), torch.where(keep, cache.c, c)
        return LSTMCache(h, c, cache.seen_tokens + seq_len)


class LSTMForCausalLM(LSTMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        self.model = LSTMModel(config)
        self.lm_head = nn.Linear(config.output_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.model.embeddings = new_embeddings

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: LSTMCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        if cache is None or is_first_iteration:
            return super().prepare_inputs_for_generation(
                input_ids,
                cache=cache,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                is_first_iteration=is_first_iteration,
                **kwargs,
            )
        # After the prompt every row gets one real token per step, so the mask holds nothing new and the step needs
        # only that token and the state. The generic preparation costs more than the LSTM step itself
        # (measured with scripts/bench.py).
        model_inputs = {"input_ids": input_ids[:, -1:], "cache": cache}
        for key in ("use_cache", "logits_to_keep", "output_hidden_states", "return_dict"):
            if key in kwargs:
                model_inputs[key] = kwargs[key]
        return model_inputs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ) -> tuple[torch.LongTensor, dict]:
        # generate() repeats the rows of every tensor input for beams and several return sequences, but not of a cache
        # the caller passes in.
        if expand_size > 1 and isinstance(model_kwargs.get("cache"), LSTMCache):
            model_kwargs["cache"] = model_kwargs["cache"].repeat_interleave(expand_size)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)

    def _prefill(self, input_ids: torch.LongTensor, generation_config, model_kwargs: dict, is_first_iteration=True):
        # generate() has repeated each prompt's row once per beam or returned sequence ([a, a, b, b]) and would run
        # every copy of the prompt anew: each prompt runs once instead, all but its last token, and every copy starts
        # from that state (5 samples of 540 questions: the prefill took 1.6 s of 2.9 s, the prompts once 0.3 s).
        # Not when the first step's hidden states are returned: they would cover the last token only.
        copies = max(generation_config.num_beams, generation_config.num_return_sequences)
        if (
            copies > 1
            and generation_config.use_cache
            and not generation_config.output_hidden_states
            and is_first_iteration
            and model_kwargs.get("cache") is None
            and model_kwargs.get("inputs_embeds") is None
            and input_ids.shape[1] > 1
        ):
            mask = model_kwargs.get("attention_mask")
            prompts = self.model(
                input_ids=input_ids[::copies, :-1],
                attention_mask=None if mask is None else mask[::copies, :-1],
                use_cache=True,
                output_hidden_states=False,
                return_dict=True,
            )
            model_kwargs["cache"] = prompts.cache.repeat_interleave(copies)
        return super()._prefill(input_ids, generation_config, model_kwargs, is_first_iteration)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        cache: LSTMCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> tuple | LSTMCausalLMOutput:
        r"""
        input_ids, attention_mask, inputs_embeds, cache:
            As for [`LSTMModel.forward`]: ids `(batch, seq_len)`, mask `(batch, past + seq_len)` or
            `(batch, seq_len)`, embeddings `(batch, seq_len, embedding_dim)`, state `(num_layers, batch, hidden_size)`.
        labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*):
            Next-token targets. They are shifted inside the model, so `labels = input_ids` works; -100 is ignored.
        logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
            Compute logits only for the last `logits_to_keep` positions (0: all), or for the given position indices.

        Returns:
            `LSTMCausalLMOutput` (or a tuple): the mean next-token cross-entropy `loss` in nats (scalar, with
            `labels`), float32 `logits` of shape `(batch, kept positions, vocab_size)`, the new `cache` when
            `use_cache`, and the `hidden_states` when `output_hidden_states`.

        Raises:
            ValueError: if both or neither of `input_ids` and `inputs_embeds` are given, or if `cache` holds another
                number of rows than the input.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :]).float()  # (B, T, V)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        if not return_dict:
            output = tuple(v for v in (logits, outputs.cache, outputs.hidden_states) if v is not None)
            return (loss,) + output if loss is not None else output
        return LSTMCausalLMOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)


__all__ = ["LSTMCache", "LSTMPreTrainedModel", "LSTMModel", "LSTMForCausalLM"]
