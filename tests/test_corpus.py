"""Pre-training corpora: .txt blocks or files, JSON Lines, save_to_disk folders, their errors, and how documents
become training sequences (one per document, long ones cut into blocks)."""

import json

import datasets
import pytest

from modeling.training.corpus import build_examples, load_corpus

TXT = "First block, line one.\nLine two.\n\nSecond block.\n\n\n\nThird block.\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.txt").write_text(TXT)
    (tmp_path / "b.jsonl").write_text('{"text": "json one", "id": 1}\n{"text": "json two", "id": 2}\n')
    return tmp_path


def test_txt_blocks_files_and_json_lines_in_the_order_given(files):
    corpus = load_corpus([files / "b.jsonl", files / "a.txt"])
    assert corpus.column_names == ["text"]
    blocks = ["First block, line one.\nLine two.", "Second block.", "Third block."]
    assert list(corpus["text"]) == ["json one", "json two", *blocks]
    assert list(load_corpus([files / "a.txt"], txt_document="file")["text"]) == [TXT.strip()]


def test_a_folder_of_txt_files(files):
    (files / "c.txt").write_text("Only block of c.")
    (files / "notes.md").write_text("not a corpus file")
    assert list(load_corpus([files])["text"])[-1] == "Only block of c."
    assert len(load_corpus([files])) == 4


def test_save_to_disk_folders_and_another_text_field(tmp_path):
    datasets.Dataset.from_dict({"body": ["saved one", "saved two"], "n": [1, 2]}).save_to_disk(tmp_path / "single")
    splits = {"train": ["train doc"], "validation": ["validation doc"]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"body": v}) for k, v in splits.items()}).save_to_disk(
        tmp_path / "dict"
    )
    corpus = load_corpus([tmp_path / "single", tmp_path / "dict"], text_field="body")
    assert list(corpus["text"]) == ["saved one", "saved two", "train doc"]


def test_a_text_field_applies_to_json_lines_beside_txt_files(files):
    (files / "c.jsonl").write_text('{"body": "from body"}\n')
    corpus = load_corpus([files / "a.txt", files / "c.jsonl"], text_field="body")
    assert list(corpus["text"])[-2:] == ["Third block.", "from body"]


def test_blank_documents_are_dropped(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "   "}\n{"text": "kept"}\n')
    assert list(load_corpus([tmp_path / "c.jsonl"])["text"]) == ["kept"]


@pytest.mark.parametrize(
    "name, text_field, error, message",
    [
        ("missing.txt", "text", FileNotFoundError, "missing.txt does not exist"),
        ("b.jsonl", "body", ValueError, "no 'body' field"),
        ("a.csv", "text", ValueError, r"a.csv: a corpus file ends in .txt, .jsonl or .json"),
        ("empty.jsonl", "body", ValueError, "holds no text"),
        ("nulls.jsonl", "body", ValueError, "nulls.jsonl: document 1 has no text in 'body'"),
        ("empty_dir", "text", ValueError, "neither a save_to_disk folder nor a folder of .txt files"),
        ("blank.txt", "text", ValueError, "blank.txt is empty"),
        ("garbled.jsonl", "text", ValueError, "garbled.jsonl could not be read"),
    ],
)
def test_bad_corpora_name_the_problem(files, name, text_field, error, message):
    (files / "a.csv").write_text("text\nx\n")
    (files / "empty.jsonl").write_text('{"body": ""}\n')
    (files / "nulls.jsonl").write_text('{"body": "a"}\n{"other": "b"}\n')
    (files / "empty_dir").mkdir()
    (files / "blank.txt").write_text("\n \n")
    (files / "garbled.jsonl").write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(error, match=message):
        load_corpus([files / name], text_field=text_field)


def test_a_split_without_train_is_refused(tmp_path):
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": ["x"]})}).save_to_disk(tmp_path / "d")
    with pytest.raises(ValueError, match=r"splits \['test'\]; the corpus is read from a 'train' split"):
        load_corpus([tmp_path / "d"])


def test_short_documents_stay_whole_and_long_ones_are_cut_into_blocks(tokenizer):
    short, long = "Ada was born in London.", "Alan Turing was born in Maida Vale and studied at King's College."
    short_ids = tokenizer(short)["input_ids"] + [tokenizer.eos_token_id]
    long_ids = tokenizer(long)["input_ids"] + [tokenizer.eos_token_id]
    max_length = len(short_ids)  # the short one fits exactly; the long one needs several blocks
    assert len(long_ids) > 2 * max_length
    examples = build_examples(datasets.Dataset.from_dict({"text": [short, long]}), tokenizer, max_length)
    blocks = [long_ids[i : i + max_length] for i in range(0, len(long_ids), max_length)]
    assert list(examples["input_ids"]) == [short_ids, *blocks]
    # A document whose eos would be alone in a last block: that block has nothing to learn and is left out.
    exact = build_examples(datasets.Dataset.from_dict({"text": [short]}), tokenizer, max_length - 1)
    assert list(exact["input_ids"]) == [short_ids[:-1]]


def test_packing_joins_the_documents_into_one_stream_cut_into_full_blocks(tokenizer):
    documents = ["Ada was born in Oslo.", "Bo works in Rome.", "Cy studied at Yale."]
    stream = [token for text in documents for token in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    max_length = 6
    assert len(stream) % max_length not in (0, 1)  # the last block is a short one, and kept
    examples = build_examples(datasets.Dataset.from_dict({"text": documents}), tokenizer, max_length, packing=True)
    assert list(examples["input_ids"]) == [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
    # Blocks cross documents: one of them holds the end of the first document and the start of the second.
    first = len(tokenizer(documents[0])["input_ids"]) + 1
    assert first % max_length != 0


def test_build_examples_refuses_an_empty_corpus_and_blocks_too_short(tokenizer):
    with pytest.raises(ValueError, match="corpus is empty"):
        build_examples(datasets.Dataset.from_dict({"text": []}), tokenizer, 4)
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        build_examples(datasets.Dataset.from_dict({"text": ["x"]}), tokenizer, 1)


def test_json_lines_keep_unicode(tmp_path):
    (tmp_path / "u.jsonl").write_text(json.dumps({"text": "Zoë née Ødegård"}) + "\n", encoding="utf-8")
    assert list(load_corpus([tmp_path / "u.jsonl"])["text"]) == ["Zoë née Ødegård"]
