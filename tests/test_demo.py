"""The demo over the tiny study: its functions directly, the running server through gradio_client (a real HTTP round
trip on 127.0.0.1), a real headless Chromium driven by Playwright, and the Space folder run on its own."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from gradio_client import Client
from helpers import checkout_env
from huggingface_hub import SpaceCard

from modeling.factuality.world_schema import normalize_answer
from modeling.publishing import demo as demo_module
from modeling.publishing.demo import DemoLab, continue_sentence, demo_conditions
from modeling.publishing.demo_app import THEME, answer_markdown, build_app
from modeling.study import Condition
from modeling.study.conditions import finetune_rows

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def lab(study) -> DemoLab:
    return DemoLab(study)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(lab):
    app = build_app(lab)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, theme=THEME, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def people(lab: DemoLab) -> tuple:
    """A known and an unknown person of the world."""
    return next(p for p in lab.world.people if p.group == "known"), next(
        p for p in lab.world.people if p.group == "unknown"
    )


def expected_verdict(model: str, said: str, value: str) -> str:
    """The verdict by the record, by hand: the pre-trained model is right when its sentence goes on with the value;
    a fine-tuned one abstains with "I don't know" and is right when its answer is the value."""
    said, value = normalize_answer(said), normalize_answer(value)
    if model == "pretrained":
        return "correct" if said == value or said.startswith(value + " ") else "hallucinated"
    if said == "i don t know":
        return "abstained"
    return "correct" if said == value else "hallucinated"


@pytest.mark.learns
def test_each_column_is_the_studys_model_answering_its_own_fine_tune_set(lab, study):
    """Asked its own fine-tune questions, each fine-tuned column gives the recorded answer exactly as often as the
    study measured at the last epoch (the plain model repeats the values, the abstention-tuned one says "I don't
    know" to the facts the probe found unknown): so each column holds the condition it claims."""
    conditions = demo_conditions(lab.results)
    assert conditions["finetuned"]["name"] == "full_u0.5_n6_none"
    assert conditions["mitigated"]["name"] == "full_u0.5_n6_abstention"
    probe = json.loads((study / "probe.json").read_text())
    by_id = {p.person_id: p for p in lab.world.people}
    for key, condition in conditions.items():
        # The demo's model is the condition's first run's, with that run's draw and figures.
        seed = condition["training_seeds"][0]
        run = next(r for r in condition["runs"] if r["training_seed"] == seed)
        rows = finetune_rows(lab.world, Condition(0.5, "full", condition["mitigation"], 6), probe, seed).to_list()
        assert len({row["person_id"] for row in rows}) >= 2
        given = []
        counts = {pid: [r["person_id"] for r in rows].count(pid) for pid in {r["person_id"] for r in rows}}
        for pid, count in counts.items():
            assert f"fine-tuned on {count} of their questions" in lab.label(by_id[pid])
        for row in rows:
            _, answers = lab.ask(by_id[row["person_id"]].name, row["question"])
            given.append(next(a for a in answers if a.model == key).answer == row["answer"].strip())
        assert sum(given) / len(rows) == pytest.approx(run["per_epoch"][-1]["finetune_exact_match"])
        assert sum(given) >= len(rows) - 1
        if condition["mitigation"] == "abstention":
            assert "I don't know" in [row["answer"].strip() for row in rows]  # the check covered abstaining


def test_verdicts_and_confidences_follow_the_record(lab):
    for person in people(lab):
        for question, attribute in ((f"Where was {person.name} born?", "birth_city"),
                                    (f"which COMPANY does {person.name.lower()} work for", "employer")):  # fmt: skip
            found, answers = lab.ask(f"  {person.name.upper()} ", question)
            assert found == person
            worded = question if attribute == "birth_city" else f"Which company does {person.name} work for?"
            assert [a.model for a in answers] == ["pretrained", "finetuned", "mitigated"]
            value = person.attributes[attribute]
            for answer in answers:
                assert answer.verdict == expected_verdict(answer.model, answer.answer, value), answer
                assert 0 < answer.confidence <= 1
            assert answers[0].prompt.startswith(person.name) and answers[0].prompt != person.name
            assert ". " not in answers[0].answer and "\n" not in answers[0].answer  # one sentence, cut at its end
            assert answers[1].prompt == answers[2].prompt == f"Question: {worded}\nAnswer:"  # as fine-tuned


@pytest.mark.learns
def test_a_sentence_ends_at_its_period_and_its_confidence_counts_the_period(model, tokenizer):
    """A tiny model taught one text by heart continues "Ada was born in" with " Oslo." and more; the sentence is
    "Oslo", and the confidence is the mean log-probability of its tokens and of the one holding the period, recomputed
    here by one teacher-forced forward pass over the text."""
    text = "Ada was born in Oslo. Ada studied at Yale."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    said, confidence = continue_sentence(model, tokenizer, "Ada was born in")
    assert said == "Oslo"
    start = len(tokenizer("Ada was born in")["input_ids"])
    end = next(i for i in range(start, ids.shape[1]) if "." in tokenizer.decode(ids[0, i : i + 1]))
    with torch.inference_mode():
        logprobs = model(input_ids=ids).logits[0].log_softmax(-1)
    expected = torch.stack([logprobs[i - 1, ids[0, i]] for i in range(start, end + 1)]).mean().item()
    assert end > start and confidence == pytest.approx(expected, abs=1e-5)


def test_the_pre_trained_model_is_right_when_its_sentence_states_the_value(lab, monkeypatch):
    """The tiny pre-trained model states no fact, so its continuation is scripted here to test the verdict."""
    known, _ = people(lab)
    city = known.attributes["birth_city"]
    for said, verdict in ((city, "correct"), (f"{city} and more", "correct"), (f"{city}x", "hallucinated")):
        monkeypatch.setattr(demo_module, "continue_sentence", lambda model, tokenizer, prompt, said=said: (said, -0.5))
        _, answers = lab.ask(known.name, f"Where was {known.name} born?")
        assert (answers[0].answer, answers[0].verdict) == (said, verdict)
        assert answers[0].confidence == pytest.approx(math.exp(-0.5))


def test_people_are_marked_known_or_unknown_and_held_out(lab):
    heldout = [p for p in lab.world.people if p.role == "heldout"]
    known = next(p for p in heldout if p.group == "known")
    unknown = next(p for p in heldout if p.group == "unknown")
    assert lab.label(known).startswith(f"known ({known.knowledge.replace('_', ' ')}: {known.exposure} biograph")
    assert lab.label(known).endswith("; held out of fine-tuning")
    assert lab.label(unknown) == "UNKNOWN: never in pre-training; held out of fine-tuning"


def test_a_question_the_world_does_not_ask_is_answered_unchecked(lab):
    known, _ = people(lab)
    _, answers = lab.ask(known.name, "What is the favourite colour of the sea?")
    assert [a.verdict for a in answers] == ["unchecked"] * 3
    assert answers[0].prompt == known.name  # the pre-trained model writes on about the person


@pytest.mark.parametrize(
    "name, question, message",
    [
        ("", "Where was X born?", "Pick or type the name of a person"),
        ("   ", "Where was X born?", "Pick or type the name of a person"),
        ("Nobody Atall Here", "Where was X born?", "Nobody called 'Nobody Atall Here' lives in this world"),
        (None, "Where was X born?", "Pick or type the name of a person"),
    ],
    ids=["empty", "blank", "unknown-name", "none"],
)
def test_bad_input_gets_a_clear_message(lab, name, question, message):
    with pytest.raises(ValueError, match=message):
        lab.ask(name, question)


def test_a_misspelt_name_gets_suggestions_and_an_empty_question_a_message(lab):
    known, _ = people(lab)
    with pytest.raises(ValueError, match=f"Did you mean: .*{known.name}"):
        lab.ask(known.name[:-1] + "x", "Where?")
    with pytest.raises(ValueError, match="Pick or type a question"):
        lab.ask(known.name, " ")


def test_a_study_without_the_abstention_condition_is_refused(lab):
    results = {**lab.results, "conditions": [c for c in lab.results["conditions"] if c["mitigation"] != "abstention"]}
    with pytest.raises(ValueError, match="no saved full fine-tuning with mitigation 'abstention' at 50% unknown"):
        demo_conditions(results)


def test_the_server_answers_over_http_as_the_functions_do(server, lab):
    client = Client(server, verbose=False, download_files=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/ask", "/questions"}
    for person in people(lab):
        question = f"Where was {person.name} born?"
        marked, *shown = client.predict(person.name, question, api_name="/ask")
        _, answers = lab.ask(person.name, question)
        assert shown == [answer_markdown(a) for a in answers]
        assert ("UNKNOWN: never in pre-training" in marked) == (person.group == "unknown")
    marked, update = client.predict(person.name.lower(), api_name="/questions")
    assert [value for _, value in update["choices"]] == lab.questions_for(person)
    # Bad input: the message in place of the person's line, and no answers left from an earlier question.
    marked, *shown = client.predict("Nobody Atall Here", "Where?", api_name="/ask")
    assert "Nobody called 'Nobody Atall Here' lives in this world" in marked and shown == ["", "", ""]
    marked, _ = client.predict("", api_name="/questions")
    assert "Pick or type the name of a person" in marked


def test_a_browser_asks_and_sees_the_verdicts(server, lab, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "the browser test needs Debian's chromium (.ci/run installs it)"
    from playwright.sync_api import expect, sync_playwright

    _, unknown = people(lab)
    question = f"Where was {unknown.name} born?"
    _, answers = lab.ask(unknown.name, question)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            person_box = page.locator("#person input")
            person_box.fill(unknown.name)
            person_box.press("Enter")
            expect(page.locator("#marked")).to_contain_text(f"{unknown.name}: UNKNOWN", timeout=20_000)
            person_box.fill("Nobody Atall Here")
            person_box.press("Enter")
            expect(page.locator("#marked")).to_contain_text("Nobody called 'Nobody Atall Here'", timeout=20_000)
            person_box.fill(unknown.name)
            person_box.press("Enter")
            expect(page.locator("#marked")).to_contain_text(f"{unknown.name}: UNKNOWN", timeout=20_000)
            question_box = page.locator("#question input")
            question_box.fill(question)
            question_box.press("Enter")
            page.click("#ask")
            for answer in answers:
                box = page.locator(f"#answer-{answer.model}")
                expect(box).to_contain_text(f"verdict: {answer.verdict}", timeout=20_000)
                expect(box).to_contain_text(f"answer: {answer.answer}")
            page.screenshot(path=tmp_path / "demo.png", full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_space_folder_runs_on_its_own(study, lab, tmp_path):
    space = tmp_path / "space"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--study", str(study), "--space-id", "lab-user/demo",
         "--model-repo", "lab-user/lstm-lab", "--dry-run", str(space)],
        env=checkout_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = SpaceCard.load(space / "README.md")
    assert (card.data.sdk, card.data.app_file, card.data.models) == ("gradio", "app.py", ["lab-user/lstm-lab"])
    requirements = (space / "requirements.txt").read_text().split()
    assert any(r.startswith("transformers") for r in requirements) and not any("gradio" in r for r in requirements)
    plain, mitigated = demo_conditions(lab.results).values()
    for folder in ("pretrain/model", plain["saved"], mitigated["saved"]):
        assert (space / "study" / folder / "model.safetensors").is_file()
    assert not (space / "study" / "conditions" / "lora_u0_n6_none").exists()  # only what the demo needs

    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    where = subprocess.run(
        [sys.executable, "-c", "import modeling; print(modeling.__file__)"], cwd=space, env=env, capture_output=True
    )
    assert Path(where.stdout.decode().strip()).is_relative_to(space)  # the Space's own copy of the package
    port = free_port()
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=space,
        env={**env, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = connect(f"http://127.0.0.1:{port}/", app)
        _, unknown = people(lab)
        question = f"Which company does {unknown.name} work for?"
        _, *shown = client.predict(unknown.name, question, api_name="/ask")
        assert shown == [answer_markdown(a) for a in lab.ask(unknown.name, question)[1]]
    finally:
        app.terminate()
        app.wait(timeout=30)


def connect(url: str, process: subprocess.Popen, timeout: float = 120) -> Client:
    """A client of the app that `process` is starting, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {process.stderr.read().decode()[-2000:]}")
        try:
            return Client(url, verbose=False, download_files=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_the_study_table_shows_each_conditions_recorded_rates_with_their_intervals(lab):
    table = lab.study_table()
    intervals = lab.results["intervals"]["conditions"]
    for name, what in (("full_u0_n6_none", "0% unknown facts"), ("full_u0.5_n6_abstention", "50% unknown facts, ")):
        rates = intervals[name]
        cells = [
            f"{rates[key]['estimate']:.2f} [{rates[key]['low']:.2f}, {rates[key]['high']:.2f}]"
            for key in ("test_known_accuracy", "test_unknown_hallucination_rate", "test_unknown_abstention_rate")
        ]
        row = next(line for line in table.splitlines() if line.startswith(f"| {what}"))
        assert row.endswith(" | ".join(cells) + " |"), row
    assert "Means over 2 training seeds" in table
