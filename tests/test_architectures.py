"""The comparison of two studies over the same worlds (`lstm-lab-compare`), on hand-made study folders whose figures
are known: the pairing, the change from the 0% share, the confidence's AUROC, the readings and the report."""

import json
from pathlib import Path

import pandas as pd
import pytest

from modeling.cli import compare
from modeling.study.architectures import CompareArguments, compare_studies, shared_worlds
from modeling.study.architectures_report import reading, write_comparison

KNOWN, UNKNOWN = (1, 2, 3), (4, 5, 6)


def write_world(folder: Path, known_right: dict[float, int], unknown_wrong: dict[float, int]) -> None:
    """One world's finished study: plain full fine-tunings at the shares of `known_right` (how many of the 3 known
    test people each answers right at its last epoch; 1 of 3 at epoch 0) and `unknown_wrong` (of the 3 unknown,
    how many it hallucinates on; it abstains on the others), one training seed, one question per person."""
    folder.mkdir(parents=True)
    conditions, answers, scores = [], [], []
    for share, right in known_right.items():
        name = f"full_u{share:g}_n4_none"
        conditions.append({"name": name, "fraction_unknown": share, "method": "full", "mitigation": "none",
                           "finetune_size": 4})  # fmt: skip
        for epoch, correct in ((0, 1), (2, right)):
            for index, person in enumerate(KNOWN):
                verdict = "correct" if index < correct else "hallucinated"
                answers.append((name, 0, epoch, "test", "known", person, verdict))
                if epoch == 2:  # the right answers are the confident ones: AUROC 1 where both kinds occur
                    scores.append((name, 0, person, verdict == "correct", 1.0 if verdict == "correct" else -1.0))
            for index, person in enumerate(UNKNOWN):
                answers.append((name, 0, epoch, "test", "unknown", person,
                                "hallucinated" if index < unknown_wrong[share] else "abstained"))  # fmt: skip
    columns = ["condition", "training_seed", "epoch", "split", "group", "person_id", "verdict"]
    frame = pd.DataFrame(answers, columns=columns)
    frame["exact_match"] = frame["verdict"] == "correct"
    frame.to_parquet(folder / "answers.parquet")
    scored = pd.DataFrame(scores, columns=["condition", "training_seed", "person_id", "is_correct", "confidence"])
    scored.to_parquet(folder / "detector_scores.parquet")
    results = {
        "config": {"finetune_size": 4},
        "conditions": conditions,
        "timings": {"pretrain": 30.0, "finetune": 30.0},
    }
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def studies(tmp_path) -> list[Path]:
    # A loses 2 of 3 known people from 0% to 100% unknown, B none; A hallucinates on 3 unknown people at 100%, B on 1.
    for seed in (0, 1):
        write_world(tmp_path / "a" / f"seed_{seed}", {0.0: 3, 1.0: 1}, {0.0: 2, 1.0: 3})
        write_world(tmp_path / "b" / f"seed_{seed}", {0.0: 3, 1.0: 3}, {0.0: 2, 1.0: 1})
    write_world(tmp_path / "b" / "seed_7", {0.0: 3, 1.0: 3}, {0.0: 2, 1.0: 1})  # a world only one side has
    return [tmp_path / "a", tmp_path / "b"]


def test_the_comparison_gives_each_difference_paired_on_the_same_worlds(studies, tmp_path):
    args = CompareArguments(studies=[str(s) for s in studies], labels=["A", "B"], output_dir=str(tmp_path / "out"))
    result = compare_studies(args, resamples=200)
    assert result["worlds"] == [0, 1] and result["shares"] == [0.0, 1.0]
    known = result["known_accuracy"]
    assert [c["estimate"] for c in known["at_share"]["1.0"]["sides"]] == pytest.approx([1 / 3, 1.0])
    change = known["change_from_0"]["1.0"]
    assert change["difference"]["estimate"] == pytest.approx(-2 / 3) and change["per_world"] == pytest.approx(
        [-2 / 3] * 2
    )
    assert change["difference"]["high"] < 0  # every resample: A keeps at most as many people as B
    halluc = result["unknown_hallucination_rate"]["at_share"]
    assert halluc["1.0"]["difference"]["estimate"] == pytest.approx(2 / 3)
    assert halluc["0.0"]["difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}  # the same answers: exactly 0
    auroc = result["confidence_auroc"]["at_share"]
    assert auroc["1.0"]["sides"][0]["estimate"] == 1.0 and auroc["1.0"]["sides"][1]["estimate"] is None  # B all right
    assert result["pretrained_known_accuracy"]["difference"]["estimate"] == 0.0
    assert result["seconds"] == [120.0, 120.0]  # two worlds of 60 s each
    assert reading(change["difference"], ["A", "B"], "loses less", "loses more") == "A loses more"
    report = write_comparison(result, tmp_path / "out").read_text()
    assert "A loses more" in report and "A hallucinates more" in report
    assert (tmp_path / "out" / "comparison.png").is_file() and json.loads(
        (tmp_path / "out" / "comparison.json").read_text()
    )


def test_readings_follow_the_interval_of_the_difference():
    labels = ["A", "B"]
    assert reading({"estimate": 0.1, "low": 0.02, "high": 0.2}, labels, "more", "less") == "A more"
    assert reading({"estimate": -0.1, "low": -0.2, "high": -0.01}, labels, "more", "less") == "A less"
    assert reading({"estimate": 0.1, "low": -0.02, "high": 0.2}, labels, "more", "less") == "inconclusive"
    assert reading({"estimate": None, "low": None, "high": None}, labels, "more", "less") == "undefined"


def test_studies_without_a_shared_world_are_refused_in_one_line(studies, tmp_path, capsys):
    assert shared_worlds(studies) == [0, 1]
    with pytest.raises(SystemExit) as stopped:
        compare.main(["--studies", str(studies[0]), str(tmp_path / "none"), "--output_dir", str(tmp_path / "out")])
    assert stopped.value.code == 2
    assert "share no finished world" in capsys.readouterr().err and not (tmp_path / "out").exists()
