"""Print continuations of prompts from a saved model (optionally with a LoRA adapter).

    python scripts/generate.py --model runs/demo/model --prompt "Ada Lovelace was born" --max-new-tokens 30
    python scripts/generate.py --model DIR --prompt "A" --prompt "B" --do-sample --temperature 0.8 --top-p 0.9
    python scripts/generate.py --model DIR --prompt "A" --num-beams 4 --num-return-sequences 2

Several prompts are generated in one left-padded batch.
"""

import argparse

import torch

from modeling.checkpoints import load_model_and_tokenizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by save_pretrained")
    parser.add_argument("--adapter", help="folder of a PEFT (LoRA) adapter to apply on the model")
    parser.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy / beam search")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0: no top-k filtering")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--num-return-sequences", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(args.model, args.adapter, device=args.device)
    batch = tokenizer(args.prompt, return_tensors="pt", padding=True).to(args.device)
    decoding = dict(
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        num_return_sequences=args.num_return_sequences,
        do_sample=args.do_sample,
        pad_token_id=tokenizer.pad_token_id,
    )
    if args.do_sample:
        decoding.update(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    with torch.inference_mode():
        output = model.generate(**batch, **decoding)
    continuations = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    for i, continuation in enumerate(continuations):
        prompt = args.prompt[i // args.num_return_sequences]
        print(f"=== {prompt!r} [{i % args.num_return_sequences + 1}/{args.num_return_sequences}]")
        print(prompt + continuation)


if __name__ == "__main__":
    main()
