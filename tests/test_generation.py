"""generate() with the recurrent state: every decoding mode gives the tokens of use_cache=False; scripts/generate.py."""

import subprocess
import sys

import pytest
import torch
from helpers import REPO, checkout_env, padded_batch, random_ids
from peft import LoraConfig, get_peft_model

DECODING = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9),
    "beam": dict(do_sample=False, num_beams=3, num_return_sequences=2),
    "beam-sampling": dict(do_sample=True, num_beams=2, top_k=30),
}


@pytest.mark.parametrize("mode", DECODING)
def test_cached_generation_equals_uncached(model, mode):
    prompt = random_ids(model, batch=2, length=5)
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outputs.append(
            model.generate(prompt, max_new_tokens=12, min_new_tokens=12, use_cache=use_cache, **DECODING[mode])
        )
    assert outputs[0].shape[1] == 5 + 12
    assert torch.equal(outputs[0], outputs[1])


def test_cache_feeds_one_token_per_step(model):
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    model.generate(random_ids(model, batch=2, length=6), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    hook.remove()
    assert seen == [6, 1, 1, 1]


def test_generation_steps_leave_global_backend_flags_alone(model):
    """Single-token CPU steps avoid oneDNN without switching it off for the process: another thread would see it
    off, and two threads saving and restoring the flag can leave it off for good."""
    flags = []
    hook = model.model.layers[0].lstm.register_forward_hook(lambda *args: flags.append(torch.backends.mkldnn.enabled))
    model.generate(random_ids(model, batch=2, length=6), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    hook.remove()
    assert flags == [True, True, True]


def test_left_padded_batch_generates_like_each_prompt_alone(model, tokenizer):
    prompts = ["Ada Lovelace was born", "Question: Where was Alan Turing born?\nAnswer:", "Grace"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    batched = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    for row, prompt in enumerate(prompts):
        alone = tokenizer(prompt, return_tensors="pt")
        single = model.generate(**alone, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert batched[row, -8:].tolist() == single[0, -8:].tolist()


def test_left_padded_batch_continues_from_a_given_cache_like_each_row_alone(model):
    """Like transformers' caches: pass the whole sequence and its mask, and only the tokens the cache has not seen
    are run. The mask's first columns hold the second row's padding; the last ones are what the step must read."""
    ids, mask, sequences = padded_batch(model, [8, 4], "left")  # row 1: 4 pads, then 4 real tokens
    prefix = model(ids[:, :5], attention_mask=mask[:, :5], use_cache=True).cache
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    settings = dict(
        max_new_tokens=5, min_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    continued = model.generate(ids, attention_mask=mask, cache=prefix, **settings)
    hook.remove()
    assert seen[0] == 3
    for row, sequence in enumerate(sequences):
        alone = model.generate(sequence[None], **settings)
        assert continued.sequences[row, -5:].tolist() == alone.sequences[0, -5:].tolist()
        torch.testing.assert_close(torch.stack(continued.scores)[:, row], torch.stack(alone.scores)[:, 0])


def run_generate_script(*args: str) -> str:
    script = REPO / "scripts" / "generate.py"
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True, env=checkout_env()).stdout


def test_generate_script_batches_prompts_like_generate(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts = ["Ada Lovelace was", "Grace"]
    stdout = run_generate_script(
        "--model", str(tmp_path), "--prompt", prompts[0], "--prompt", prompts[1], "--max-new-tokens", "6"
    )
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert (
            f"=== {prompt!r} [1/1]\n{prompt}{tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)}\n"
            in stdout
        )


# The script's sampling settings when no flag is given, and each flag with the setting it must reach generate() as.
SCRIPT_SAMPLING = dict(temperature=1.0, top_k=0, top_p=1.0)
SAMPLING_FLAGS = {
    "temperature": (["--temperature", "0.5"], dict(temperature=0.5)),
    "top-k": (["--top-k", "3"], dict(top_k=3)),
    "top-p": (["--top-p", "0.5"], dict(top_p=0.5)),
}


@pytest.mark.parametrize("flags, setting", SAMPLING_FLAGS.values(), ids=SAMPLING_FLAGS.keys())
def test_generate_script_applies_each_sampling_option(tmp_path, model, tokenizer, flags, setting):
    # A fresh model's next-token distribution is nearly uniform, and temperature or top-p barely change it. Scaled
    # embeddings (tied to the head) make it peaked: half the probability mass in about 30 tokens.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(100)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ids = tokenizer("Ada", return_tensors="pt").input_ids

    def sampled(**decoding) -> str:
        torch.manual_seed(0)  # the script's default --seed
        output = model.generate(
            ids,
            do_sample=True,
            max_new_tokens=8,
            pad_token_id=tokenizer.pad_token_id,
            **{**SCRIPT_SAMPLING, **decoding},
        )
        return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)

    expected = sampled(**setting)
    assert expected != sampled()  # with this seed the option changes the text, so ignoring it cannot pass
    stdout = run_generate_script(
        "--model", str(tmp_path), "--prompt", "Ada", "--max-new-tokens", "8", "--do-sample", *flags
    )
    assert stdout == f"=== 'Ada' [1/1]\nAda{expected}\n"


def test_generate_script_returns_the_beams_of_generate(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    ids = tokenizer("Ada", return_tensors="pt").input_ids
    output = model.generate(
        ids, num_beams=3, num_return_sequences=2, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id
    )
    beams = tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)
    assert beams[0] != beams[1]
    stdout = run_generate_script(
        "--model", str(tmp_path), "--prompt", "Ada", "--max-new-tokens", "4", "--num-beams", "3",
        "--num-return-sequences", "2",
    )  # fmt: skip
    assert stdout == f"=== 'Ada' [1/2]\nAda{beams[0]}\n=== 'Ada' [2/2]\nAda{beams[1]}\n"


@pytest.mark.parametrize("mode", ["beam", "sampling"])
def test_left_padded_cached_generation_equals_uncached(model, tokenizer, mode):
    batch = tokenizer(["Ada Lovelace was born", "Grace"], return_tensors="pt", padding=True, padding_side="left")
    outputs = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        outputs.append(
            model.generate(**batch, max_new_tokens=8, min_new_tokens=8, use_cache=use_cache, **DECODING[mode])
        )
    assert torch.equal(outputs[0], outputs[1])


def generate_watching_inputs(model, inputs: dict, **settings) -> tuple[list[tuple], torch.Tensor, torch.Tensor]:
    """(the input shapes the LSTM stack saw with the cache on, the tokens with the cache on, with it off): 6 new
    tokens each, from the same random state."""
    seen, outputs = [], []
    hook = model.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    torch.manual_seed(0)
    outputs.append(model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, use_cache=True, **settings))
    hook.remove()
    torch.manual_seed(0)
    outputs.append(model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, use_cache=False, **settings))
    return seen, *outputs


@pytest.mark.parametrize(
    "settings", [dict(num_beams=2), dict(num_return_sequences=3, do_sample=True)], ids=["beams", "returns"]
)
def test_several_sequences_run_the_prompt_once(model, tokenizer, settings):
    """Copies of a prompt start from one run of it (all but its last token, then one token per copy), and give the
    tokens of use_cache=False, which runs every copy from the start; left padding included."""
    batch = tokenizer(["Ada Lovelace was born", "Grace"], return_tensors="pt", padding=True, padding_side="left")
    width, copies = batch["input_ids"].shape[1], settings.get("num_beams", settings.get("num_return_sequences"))
    seen, cached, uncached = generate_watching_inputs(model, batch, **settings)
    assert seen[:3] == [(2, width - 1), (2 * copies, 1), (2 * copies, 1)]
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("mode", ["beam", "beam-sampling"])
def test_unpadded_copies_run_the_prompt_once_too(model, mode):
    """Without padding generate() drops the attention mask: the prompts still run once, and the tokens are
    use_cache=False's."""
    ids = random_ids(model, batch=2, length=6)
    seen, cached, uncached = generate_watching_inputs(model, {"input_ids": ids}, **DECODING[mode])
    assert seen[:2] == [(2, 5), (2 * DECODING[mode]["num_beams"], 1)]
    assert torch.equal(cached, uncached)


def test_copies_run_the_prompt_once_under_a_config_that_returns_tuples(model):
    """A config with return_dict False makes forward return tuples: the prompts' run still finds its cache."""
    ids = random_ids(model, batch=2, length=6)
    expected = model.generate(ids, max_new_tokens=4, min_new_tokens=4, num_beams=2, do_sample=False)
    model.config.return_dict = False  # the fixture is this test's own model
    assert torch.equal(model.generate(ids, max_new_tokens=4, min_new_tokens=4, num_beams=2, do_sample=False), expected)


def test_copies_asked_for_hidden_states_run_the_whole_prompt(model):
    """The first step's hidden states cover the whole prompt, as without copies."""
    ids = random_ids(model, batch=2, length=6)
    out = model.generate(
        ids, max_new_tokens=2, num_beams=2, output_hidden_states=True, return_dict_in_generate=True, do_sample=False
    )
    assert out.hidden_states[0][-1].shape[:2] == (4, 6)


def test_generation_from_inputs_embeds_equals_from_input_ids(model):
    ids = random_ids(model, batch=2, length=5)
    from_ids = model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    from_embeds = model.generate(
        inputs_embeds=model.get_input_embeddings()(ids), max_new_tokens=6, min_new_tokens=6, do_sample=False
    )
    assert torch.equal(from_embeds, from_ids[:, 5:])  # with embeddings only the new tokens come back


@pytest.mark.parametrize(
    "settings", [dict(num_beams=2), dict(num_return_sequences=2, do_sample=True)], ids=["beams", "returns"]
)
def test_a_given_cache_is_expanded_for_several_sequences(model, settings):
    """Each row's state must be repeated next to itself ([a, a, b, b]), as generate() repeats the rows of ids, and be
    used: the first step runs only the three tokens the cache has not seen."""
    ids = random_ids(model, batch=2, length=7)
    prefix = model(ids[:, :4], use_cache=True).cache
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    outputs = []
    for cache in (prefix, None):
        torch.manual_seed(0)
        outputs.append(model.generate(ids, cache=cache, max_new_tokens=5, min_new_tokens=5, **settings))
    hook.remove()
    assert seen[0] == (4, 3)  # 2 rows x 2 sequences each, the 3 unseen tokens
    assert torch.equal(outputs[0], outputs[1])


def test_cached_steps_return_the_hidden_states_of_uncached_ones(model):
    ids = random_ids(model, batch=2, length=5)
    settings = dict(
        max_new_tokens=4, min_new_tokens=4, do_sample=False, output_hidden_states=True, return_dict_in_generate=True
    )
    cached, uncached = (model.generate(ids, use_cache=use_cache, **settings) for use_cache in (True, False))
    assert torch.equal(cached.sequences, uncached.sequences)
    for step, (with_cache, without) in enumerate(zip(cached.hidden_states, uncached.hidden_states, strict=True)):
        assert len(with_cache) == len(without) == model.config.num_layers + 1
        for layer, (a, b) in enumerate(zip(with_cache, without, strict=True)):
            assert (a[:, -1] - b[:, -1]).abs().max() <= 1e-5, (step, layer)


def test_lora_on_the_lstm_weights_generates_the_same_with_and_without_cache(model):
    lora = LoraConfig(r=4, target_parameters=["weight_ih_l0", "weight_hh_l0"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora).eval()
    ids = random_ids(model, batch=2, length=5)
    outputs = [
        peft_model.generate(input_ids=ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=use_cache)
        for use_cache in (True, False)
    ]
    assert torch.equal(outputs[0], outputs[1])
    with peft_model.disable_adapter():
        base = peft_model.generate(input_ids=ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert not torch.equal(outputs[0], base)  # the adapter really takes part in the cached steps


def test_generate_script_applies_an_adapter(tmp_path, model, tokenizer):
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lora = LoraConfig(r=4, target_parameters=["weight_ih_l0", "weight_hh_l0"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = tokenizer("Ada Lovelace was", return_tensors="pt").input_ids
    expected = peft_model.generate(
        input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    with peft_model.disable_adapter():
        base = peft_model.generate(
            input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    assert not torch.equal(expected, base)
    stdout = run_generate_script(
        "--model",
        str(tmp_path / "model"),
        "--adapter",
        str(tmp_path / "adapter"),
        "--prompt",
        "Ada Lovelace was",
        "--max-new-tokens",
        "6",
    )
    assert stdout.endswith(
        f"Ada Lovelace was{tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)}\n"
    )
