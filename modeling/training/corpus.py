"""Pre-training corpora: the user's text files, JSON Lines or `datasets` folders, cut into training sequences.

Each document becomes one training sequence ended by the eos token, as a prompt starts from the zero state at
generation time: with documents packed back to back (as `run_clm` packs them), the model would learn to start a
document only after an eos token, and a bare name as a prompt would be a state it never trained on. A document longer
than `max_length` tokens is cut into blocks of `max_length`, as `run_clm` cuts its stream.
"""

import os
from pathlib import Path

import datasets
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")
# How a .txt file splits into documents; these are the `sample_by` modes of the datasets `text` builder.
TXT_DOCUMENTS = {"block": "paragraph", "file": "document"}


def _load_file(path: Path, text_field: str, txt_document: str) -> datasets.Dataset:
    """A .txt or JSON Lines file through the datasets builder for it (cached by datasets), as a `text` column."""
    # Only a small file can be blank; a large one is not read twice to find out.
    if path.stat().st_size < 2**20 and not path.read_bytes().strip():
        raise ValueError(f"{path} is empty")
    try:
        if path.suffix in TEXT_SUFFIXES:
            documents = datasets.load_dataset(
                "text", data_files=str(path), sample_by=TXT_DOCUMENTS[txt_document], keep_linebreaks=True, split="train"
            )
            # A run of three or more newlines leaves the extra ones at the edges of a block.
            return documents.map(lambda text: {"text": text.strip()}, input_columns="text", desc="stripping blocks")
        documents = datasets.load_dataset("json", data_files=str(path), split="train")
    except datasets.exceptions.DatasetGenerationError as err:  # e.g. a line that is not JSON
        raise ValueError(f"{path} could not be read: {err.__cause__ or err}") from err
    if text_field not in documents.column_names:
        raise ValueError(f"{path}: no {text_field!r} field in any line (fields: {documents.column_names})")
    return _text_column(documents, text_field, path)


def _load_saved(path: Path, text_field: str) -> datasets.Dataset:
    """A folder written by `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`, whose "train" split is used)."""
    saved = datasets.load_from_disk(str(path))
    if isinstance(saved, datasets.DatasetDict):
        if "train" not in saved:
            raise ValueError(f"{path} holds the splits {list(saved)}; the corpus is read from a 'train' split")
        saved = saved["train"]
    if text_field not in saved.column_names:
        raise ValueError(f"{path}: no {text_field!r} column (columns: {saved.column_names})")
    return _text_column(saved, text_field, path)


def _text_column(documents: datasets.Dataset, text_field: str, path: Path) -> datasets.Dataset:
    """Only `text_field`, renamed `text`, after checking that every document is a string."""
    documents = documents.select_columns([text_field])
    # From the arrow column's type and null count, without reading a memory-mapped corpus into Python.
    column = documents.data.column(text_field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) or column.null_count:
        row, text = next((i, t) for i, t in enumerate(documents[text_field]) if not isinstance(t, str))
        raise ValueError(f"{path}: document {row} has no text in {text_field!r} (got {text!r:.80})")
    return documents.rename_column(text_field, "text") if text_field != "text" else documents


def load_corpus(
    paths: list[str | os.PathLike], text_field: str = "text", txt_document: str = "block"
) -> datasets.Dataset:
    """The documents of `paths` as one dataset with a single `text` column, in the order given.

    Args:
        paths: `.txt` files (one document per blank-line-separated block, or per file with `txt_document="file"`),
            JSON Lines files (`.jsonl`/`.json`, one document per line in `text_field`), folders written by
            `save_to_disk`, or folders of `.txt` files.
        text_field: the field (JSON Lines) or column (saved datasets) holding the text; .txt files have no fields.
        txt_document: "block" or "file".

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a path of another kind, an empty file, a file that is not JSON Lines, a missing
            `text_field`, a document that is not a string, or a corpus without any non-blank document. Each message
            names the path (and the row) at fault.
    """
    if txt_document not in TXT_DOCUMENTS:
        raise ValueError(f"txt_document must be one of {sorted(TXT_DOCUMENTS)}, got {txt_document!r}")
    if not paths:
        raise ValueError("No corpus given: name .txt files, JSON Lines files or save_to_disk folders")
    parts = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"Corpus path {path} does not exist")
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            parts.append(_load_saved(path, text_field))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in TEXT_SUFFIXES)
            if not files:
                raise ValueError(f"{path} is neither a save_to_disk folder nor a folder of .txt files")
            parts.extend(_load_file(file, text_field, txt_document) for file in files)
        elif path.suffix in TEXT_SUFFIXES + JSON_SUFFIXES:
            parts.append(_load_file(path, text_field, txt_document))
        else:
            raise ValueError(f"{path}: a corpus file ends in .txt, .jsonl or .json")
    corpus = datasets.concatenate_datasets(parts).filter(lambda text: bool(text.strip()), input_columns="text")
    if len(corpus) == 0:
        raise ValueError(f"The corpus {', '.join(map(str, paths))} holds no text")
    return corpus


def build_examples(
    documents: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, packing: bool = False
) -> datasets.Dataset:
    """Training sequences (`input_ids`) from a dataset with a `text` column: each document plus the eos token, cut
    into blocks of at most `max_length` tokens. Runs as a batched, cached `datasets.map`.

    With `packing=True` the eos-ended documents of each map batch (1,000) are first joined into one stream, as
    transformers' `run_clm.py` example does (`group_texts`), so blocks start anywhere, mid-sentence and mid-name
    included, and hold several documents. A recurrent model then has to read each name wherever it stands: trained
    one document per sequence, an LSTM learns to read a person's name only at the start of the sequence, and a
    question that names the person later (after "Question: Where was") is answered about somebody else.

    Raises:
        ValueError: if `documents` is empty or `max_length` < 2 (a block needs an input and a target).
    """
    if len(documents) == 0:
        raise ValueError("The pre-training corpus is empty")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")

    def tokenize_and_cut(batch: dict[str, list]) -> dict[str, list]:
        encoded = [
            ids + [tokenizer.eos_token_id] for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        ]
        if packing:
            encoded = [[token for ids in encoded for token in ids]]
        blocks = []
        for ids in encoded:
            # A last block of one token (the eos alone) has no target to learn.
            blocks.extend(ids[start : start + max_length] for start in range(0, len(ids) - 1, max_length))
        return {"input_ids": blocks}

    return documents.map(
        tokenize_and_cut, batched=True, remove_columns=documents.column_names, desc="tokenizing and cutting"
    )


__all__ = ["TXT_DOCUMENTS", "build_examples", "load_corpus"]
