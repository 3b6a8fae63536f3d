"""Forward-pass behaviour of LSTMForCausalLM: loss, outputs, state, padding, structure, dtypes."""

import pytest
import torch
import torch.nn.functional as F
from helpers import padded_batch, random_ids, tiny_model
from transformers import AutoModel

from modeling import LSTMCache, LSTMModel


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(model):
    ids = random_ids(model)
    labels = ids.clone()
    labels[0, 3:7] = -100
    out = model(ids, labels=labels)
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)


def test_tuple_and_dict_outputs_agree(model):
    ids = random_ids(model)
    as_dict = model(ids, labels=ids, use_cache=True, output_hidden_states=True)
    as_tuple = model(ids, labels=ids, use_cache=True, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 4  # loss, logits, cache, hidden_states
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    torch.testing.assert_close(as_tuple[2].h, as_dict.cache.h)
    assert len(as_tuple[3]) == len(as_dict.hidden_states) == model.config.num_layers + 1


def test_inputs_embeds_equal_input_ids(model):
    ids = random_ids(model)
    from_ids = model(ids).logits
    from_embeds = model(inputs_embeds=model.get_input_embeddings()(ids)).logits
    torch.testing.assert_close(from_embeds, from_ids)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=model.get_input_embeddings()(ids))


def test_base_model_output_is_what_the_head_consumes(model):
    ids = random_ids(model)
    base = getattr(model, model.base_model_prefix)
    assert isinstance(base, LSTMModel) and model.base_model is base
    hidden = base(ids).last_hidden_state
    assert hidden.shape[-1] == model.config.output_size
    torch.testing.assert_close(model.get_output_embeddings()(hidden), model(ids).logits)


def test_hidden_states_are_embeddings_then_each_layer(model):
    ids = random_ids(model)
    out = model.model(ids, output_hidden_states=True)
    assert [h.shape[-1] for h in out.hidden_states] == [16, 32, 32]
    torch.testing.assert_close(out.hidden_states[0], model.get_input_embeddings()(ids))
    torch.testing.assert_close(model.model.projection(out.hidden_states[-1]), out.last_hidden_state)


@pytest.mark.parametrize("split", [1, 5, 10])
def test_chunked_forward_with_state_equals_full_forward(model, split):
    ids = random_ids(model)
    full = model(ids, use_cache=True)
    first = model(ids[:, :split], use_cache=True)
    second = model(ids[:, split:], cache=first.cache, use_cache=True)
    assert (torch.cat([first.logits, second.logits], dim=1) - full.logits).abs().max() <= 1e-5
    assert (second.cache.h - full.cache.h).abs().max() <= 1e-5
    assert (second.cache.c - full.cache.c).abs().max() <= 1e-5
    assert second.cache.get_seq_length() == ids.shape[1]


def test_forward_does_not_change_the_cache_it_was_given(model):
    ids = random_ids(model)
    prompt = model(ids[:, :4], use_cache=True).cache
    before = prompt.h.clone()
    model(ids[:, 4:], cache=prompt, use_cache=True)
    assert torch.equal(prompt.h, before)


@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_padding_never_touches_the_state(model, side):
    """Every real position of a padded batch gets the logits of its sequence run alone, whatever side is padded."""
    ids, mask, sequences = padded_batch(model, [9, 4, 6], side, width=12)
    out = model(ids, attention_mask=mask, use_cache=True)
    for row, seq in enumerate(sequences):
        alone = model(seq[None], use_cache=True)
        real = mask[row].bool()
        assert (out.logits[row, real] - alone.logits[0]).abs().max() <= 1e-5
        assert (out.cache.h[:, row] - alone.cache.h[:, 0]).abs().max() <= 1e-5
        assert (out.cache.c[:, row] - alone.cache.c[:, 0]).abs().max() <= 1e-5


@pytest.mark.parametrize("side", ["left", "right", "both"])
def test_padding_without_a_cache_runs_dense_and_equals_each_row_alone(model, side, monkeypatch):
    """Without a cache to return, a padded batch runs dense (never packed): each real position still gets the logits
    of its row run alone, and the outputs at the pads are zero."""
    import modeling.lstm.modeling_lstm as modeling_lstm

    def refuse(*args, **kwargs):
        raise AssertionError("packed a batch whose final state nobody reads")

    ids, mask, sequences = padded_batch(model, [9, 4, 0, 6], side, width=12)  # row 2: padding only
    with monkeypatch.context() as patched:
        patched.setattr(modeling_lstm, "pack_padded_sequence", refuse)
        out = model.model(ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    for row, seq in enumerate(sequences):
        real = mask[row].bool()
        for layer in (*out.hidden_states[1:], out.last_hidden_state):  # each LSTM layer's output, then the head's input
            assert torch.equal(layer[row, ~real], torch.zeros_like(layer[row, ~real]))
        if len(seq):
            alone = model.model(seq[None], use_cache=False)
            assert (out.last_hidden_state[row, real] - alone.last_hidden_state[0]).abs().max() <= 1e-5


def test_dense_and_packed_padding_give_the_same_loss_and_gradients(model):
    """A padded training batch: the same loss and gradients whether it runs dense (no cache) or packed (a cache)."""
    ids, mask, _ = padded_batch(model, [9, 4, 7], "right")
    labels = ids.masked_fill(mask == 0, -100)
    grads = []
    for use_cache in (False, True):
        model.zero_grad()
        out = model(ids, attention_mask=mask, labels=labels, use_cache=use_cache)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for name, grad in grads[1][1].items():
        torch.testing.assert_close(grads[0][1][name], grad, msg=name)


def test_padded_hidden_states_equal_each_row_alone(model):
    ids, mask, sequences = padded_batch(model, [9, 5], "left")
    out = model.model(ids, attention_mask=mask, output_hidden_states=True)
    for row, seq in enumerate(sequences):
        alone = model.model(seq[None], output_hidden_states=True)
        real = mask[row].bool()
        for layer, (batched, single) in enumerate(zip(out.hidden_states, alone.hidden_states, strict=True)):
            assert (batched[row, real] - single[0]).abs().max() <= 1e-5, layer


def test_defaults_follow_the_config_and_the_mode(tokenizer):
    model = tiny_model(tokenizer)
    ids = random_ids(model)
    out = model(ids)  # eval: a cache for generation, no hidden states unless asked
    assert out.cache is not None and out.hidden_states is None and out.loss is None
    assert model(ids, use_cache=False).cache is None
    assert model.train()(ids).cache is None  # training builds no cache
    as_tuple = model.eval()(ids, use_cache=False, return_dict=False)
    assert len(as_tuple) == 1 and torch.equal(as_tuple[0], out.logits)  # no empty loss or cache slots
    base = model.model(ids, return_dict=False, use_cache=True, output_hidden_states=True)
    assert len(base) == 3 and torch.equal(base[0], model.model(ids).last_hidden_state)
    model.config.output_hidden_states = True
    assert len(model(ids).hidden_states) == model.config.num_layers + 1
    model.config.return_dict = False
    assert isinstance(model(ids), tuple) and isinstance(model.model(ids), tuple)


@pytest.mark.parametrize("keep", [1, 3, torch.tensor([0, 4])], ids=["last", "last-3", "positions"])
def test_logits_to_keep(model, keep):
    ids = random_ids(model)
    full = model(ids).logits
    expected = full[:, -keep:] if isinstance(keep, int) else full[:, keep]
    torch.testing.assert_close(model(ids, logits_to_keep=keep).logits, expected)


def test_loss_over_a_given_number_of_items_sums_then_divides(model):
    """The Trainer passes num_items_in_batch (label tokens over all accumulated micro-batches and processes), so that
    a step's loss is the sum over its tokens divided by that count, not a mean of per-batch means."""
    ids = random_ids(model)
    logits = model(ids).logits
    summed = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
    out = model(ids, labels=ids, num_items_in_batch=torch.tensor(7))
    torch.testing.assert_close(out.loss, summed / 7)


def test_a_cache_of_another_batch_size_is_refused(model):
    cache = model(random_ids(model, batch=2), use_cache=True).cache
    with pytest.raises(ValueError, match="cache holds 2 rows but the input has 3"):
        model(random_ids(model, batch=3), cache=cache)


@pytest.mark.parametrize("shapes", [((2, 3, 4), (2, 3, 5)), ((3, 4), (3, 4))], ids=["different", "two-dimensional"])
def test_cache_needs_h_and_c_of_one_3d_shape(shapes):
    with pytest.raises(ValueError, match="LSTMCache needs h and c of one shape"):
        LSTMCache(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


def test_single_token_cpu_steps_take_the_lstm_cell(model, monkeypatch):
    """One token per layer goes through torch.lstm_cell (the fast path measured in scripts/bench.py); longer inputs
    through nn.LSTM's fused kernel."""
    calls = []
    cell = torch.lstm_cell
    monkeypatch.setattr(torch, "lstm_cell", lambda *args: calls.append(args[0].shape) or cell(*args))
    model.generate(random_ids(model, batch=2, length=6), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert calls == [(2, 16), (2, 32)] * 2  # 2 steps after the prompt x 2 layers (inputs of width E, then H)


def test_all_padding_row_keeps_its_state(model):
    ids = random_ids(model, batch=2, length=6)
    prompt = model(ids, use_cache=True).cache
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    out = model(ids[:, :3], attention_mask=mask, cache=prompt, use_cache=True)
    torch.testing.assert_close(out.cache.h[:, 1], prompt.h[:, 1])
    torch.testing.assert_close(out.cache.c[:, 1], prompt.c[:, 1])
    assert torch.all(out.logits[1] == 0)  # no real token, no prediction: the zero state of the head


@pytest.mark.parametrize("split", [2, 7], ids=["padding-in-both-parts", "padding-in-the-prefix"])
def test_left_padded_batch_continued_from_its_cache_equals_each_row_alone(model, split):
    """The second call gets the mask of the whole sequence (as generate() passes it) and must read its last columns:
    the first ones hold the second row's padding. Split at 2, row 1's prefix is all padding and its rest starts with
    two pads, so the padded path must start from the given cache too."""
    ids, mask, sequences = padded_batch(model, [10, 6], "left")  # row 1: 4 pads, then 6 real tokens
    prefix = model(ids[:, :split], attention_mask=mask[:, :split], use_cache=True)
    rest = model(ids[:, split:], attention_mask=mask, cache=prefix.cache, use_cache=True)
    for row, seq in enumerate(sequences):
        alone = model(seq[None], use_cache=True)
        real = mask[row, split:].bool()
        assert (rest.logits[row, real] - alone.logits[0, -int(real.sum()) :]).abs().max() <= 1e-5
        assert (rest.cache.h[:, row] - alone.cache.h[:, 0]).abs().max() <= 1e-5
        assert (rest.cache.c[:, row] - alone.cache.c[:, 0]).abs().max() <= 1e-5


def test_cache_reorders_for_beams():
    h = torch.arange(6.0).view(1, 3, 2)
    cache = LSTMCache(h, -h)
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert cache.h[0, :, 0].tolist() == [4.0, 4.0, 0.0]
    assert cache.c[0, :, 0].tolist() == [-4.0, -4.0, 0.0]


@pytest.mark.parametrize("tie, hidden", [(True, 32), (True, 16), (False, 32)], ids=["tied+proj", "tied", "untied"])
def test_weight_tying_and_projection(tokenizer, tie, hidden):
    model = tiny_model(tokenizer, tie_word_embeddings=tie, hidden_size=hidden)
    tied = model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == tie
    assert (model.model.projection is not None) == (tie and hidden != 16)


def test_init_weights_follow_config(tokenizer):
    model = tiny_model(tokenizer, initializer_range=0.05)
    # N(0, 0.05^2) for the embeddings (320 x 16 draws) and the projection (32 x 16 draws): the sample mean of 512
    # draws has a standard error of 0.05 / sqrt(512) = 0.002.
    for linear in (model.get_input_embeddings(), model.model.projection):
        assert abs(linear.weight.std().item() - 0.05) < 0.01 and abs(linear.weight.mean().item()) < 0.01
    lstm = model.model.layers[0].lstm
    hidden = model.config.hidden_size
    assert torch.all(lstm.bias_ih_l0[hidden : 2 * hidden] == 1.0)  # forget gate starts open
    assert torch.all(lstm.bias_ih_l0[:hidden] == 0.0) and torch.all(lstm.bias_hh_l0 == 0.0)
    # U(-1/sqrt(H), 1/sqrt(H)) as torch's own LSTM init: 4096 draws reach close to the bound.
    assert 0.95 * hidden**-0.5 <= lstm.weight_hh_l0.abs().max() <= hidden**-0.5


def test_parameter_count_is_the_architecture_s(model):
    # Tiny sizes: vocabulary V = 320, embedding E = 16, hidden H = 32, two layers, head tied to the embeddings.
    V, E, H = 320, 16, 32
    lstm = lambda inputs: 4 * H * (inputs + H) + 2 * 4 * H  # noqa: E731 - weights ih and hh, biases ih and hh
    expected = V * E + lstm(E) + lstm(H) + H * E  # embeddings, two layers, projection (no bias); the head is tied
    assert model.num_parameters() == expected == 20_480


def test_resize_token_embeddings_keeps_old_rows(model):
    old = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(old.shape[0] + 7)
    assert model.config.vocab_size == old.shape[0] + 7
    assert model.lm_head.weight.shape[0] == old.shape[0] + 7
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(model.get_input_embeddings().weight[: old.shape[0]], old)
    assert model(torch.tensor([[old.shape[0] + 6]])).logits.shape[-1] == old.shape[0] + 7


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer):
    ids = random_ids(tiny_model(tokenizer))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(tokenizer).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.model.layers)
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_dropout_is_active_in_training_only(tokenizer):
    model = tiny_model(tokenizer, dropout=0.5)
    ids = random_ids(model)
    torch.testing.assert_close(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.allclose(model(ids).logits, model(ids).logits)


def test_bfloat16_round_trip(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert isinstance(loaded, LSTMModel)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    ids = random_ids(model)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding takes the packed path in bfloat16 too
    out = loaded(ids, attention_mask=mask, use_cache=True)
    assert out.last_hidden_state.dtype == torch.bfloat16 and out.cache.h.dtype == torch.bfloat16
    reference = model.model(ids, attention_mask=mask).last_hidden_state
    # bfloat16 keeps 8 significant bits (relative step 2**-8 = 0.4%); the measured relative error is 0.6-0.8% over
    # five seeds. The bound is relative because these outputs are small (max |x| ~ 0.01): an absolute one would
    # let an all-zero output pass.
    relative_error = (out.last_hidden_state.float() - reference).norm() / reference.norm()
    assert relative_error < 0.02
