"""generate() with the recurrent state: every decoding mode gives the tokens of use_cache=False; scripts/generate.py."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_ids
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
    model.generate(random_ids(model, batch=1, length=6), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    hook.remove()
    assert seen == [6, 1, 1, 1]


def test_left_padded_batch_generates_like_each_prompt_alone(model, tokenizer):
    prompts = ["Ada Lovelace was born", "Question: Where was Alan Turing born?\nAnswer:", "Grace"]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    batched = model.generate(**batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    for row, prompt in enumerate(prompts):
        alone = tokenizer(prompt, return_tensors="pt")
        single = model.generate(**alone, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert batched[row, -8:].tolist() == single[0, -8:].tolist()


def test_generation_continues_from_a_given_cache(model):
    """Like transformers' caches: pass the whole sequence, and only the tokens the cache has not seen are run."""
    ids = random_ids(model, batch=1, length=8)
    prefix = model(ids[:, :5], use_cache=True).cache
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    settings = dict(
        max_new_tokens=5, min_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    continued = model.generate(ids, cache=prefix, **settings)
    hook.remove()
    fresh = model.generate(ids, **settings)
    assert seen[0] == 3
    assert torch.equal(continued.sequences, fresh.sequences)
    torch.testing.assert_close(torch.stack(continued.scores), torch.stack(fresh.scores))


def run_generate_script(*args: str) -> str:
    script = Path(__file__).resolve().parents[1] / "scripts" / "generate.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=True).stdout


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


@pytest.mark.parametrize(
    "options, count",
    [
        (["--num-beams", "3", "--num-return-sequences", "2"], 2),
        (["--do-sample", "--temperature", "0.7", "--top-k", "5"], 1),
    ],
    ids=["beams", "sampling"],
)
def test_generate_script_decoding_options(tmp_path, model, tokenizer, options, count):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    stdout = run_generate_script("--model", str(tmp_path), "--prompt", "Ada", "--max-new-tokens", "4", *options)
    assert stdout.count("=== 'Ada'") == count
    assert f"[{count}/{count}]" in stdout


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
    ids = random_ids(model, batch=1, length=7)
    prefix = model(ids[:, :4], use_cache=True).cache
    outputs = []
    for cache in (prefix, None):
        torch.manual_seed(0)
        outputs.append(model.generate(ids, cache=cache, max_new_tokens=5, min_new_tokens=5, **settings))
    assert torch.equal(outputs[0], outputs[1])


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
