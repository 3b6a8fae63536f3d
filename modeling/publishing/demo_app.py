"""The demo's web page, a Gradio app over `DemoLab`: pick or type a person and a question, and see the three models'
answers side by side with their confidence and verdict, beside the study's headline plot and table.

Its HTTP API has two endpoints, as `gradio_client` sees them: `/questions` (a name in; the marked person and their
questions out) and `/ask` (a name and a question in; the mark and the three answers out, as Markdown). Bad input (an
empty or unknown name, an empty question) comes back as the message in place of the mark, with empty answers.
"""

import gradio as gr

from .demo import DEMO_MODELS, DemoAnswer, DemoLab

# System fonts only: the default theme's web fonts would be fetched from the internet by every visitor's browser.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"])

INTRO = """# Hallucination after fine-tuning, live

An LSTM language model read biographies of half of the people of an invented world, then was fine-tuned on questions
about people, some of whom it had never read about. Pick a person (each is marked **known** or **UNKNOWN** to
pre-training) and a question, and compare what the pre-trained model writes, what the plainly fine-tuned model
answers, and what the model fine-tuned to say "I don't know" answers. Every verdict is checked against the record of
the invented world.
"""


def answer_markdown(answer: DemoAnswer) -> str:
    """One model's answer as the page shows it."""
    prompt = answer.prompt.replace("\n", " ")
    return (
        f"### {DEMO_MODELS[answer.model]}\n\n"
        f"given: `{prompt}`\n\n"
        f"answer: **{answer.answer or '(nothing)'}**\n\n"
        f"confidence: {answer.confidence:.2f}\n\n"
        f"verdict: **{answer.verdict}**"
    )


def build_app(lab: DemoLab) -> gr.Blocks:
    """The Gradio app over `lab` (not launched)."""
    people = lab.world.people
    choices = [(f"{p.name} · {'known' if p.group == 'known' else 'UNKNOWN'}", p.name) for p in people]
    first = people[0]

    def mark(person) -> str:
        return f"**{person.name}**: {lab.label(person)}"

    # Bad input is answered in the person's line, and the answers of an earlier question are cleared, so nothing on
    # the page belongs to another person than the one named.
    def questions(name: str | None):
        try:
            person = lab.find_person(name)
        except ValueError as error:
            return f"**{error}**", gr.Dropdown()
        asked = lab.questions_for(person)
        return mark(person), gr.Dropdown(choices=asked, value=asked[0])

    def ask(name: str | None, question: str | None):
        try:
            person, answers = lab.ask(name, question)
        except ValueError as error:
            return f"**{error}**", *([""] * len(DEMO_MODELS))
        return mark(person), *(answer_markdown(a) for a in answers)

    with gr.Blocks(title="LSTM hallucination lab") as app:
        gr.Markdown(INTRO)
        with gr.Row():
            person = gr.Dropdown(
                choices=choices,
                value=first.name,
                allow_custom_value=True,
                label="Person",
                info="pick one, or type a name",
                elem_id="person",
            )
            question = gr.Dropdown(
                choices=lab.questions_for(first),
                value=lab.questions_for(first)[0],
                allow_custom_value=True,
                label="Question",
                info="pick one, or type your own (its verdict is then unchecked)",
                elem_id="question",
            )
        marked = gr.Markdown(mark(first), label="person", elem_id="marked")
        button = gr.Button("Ask the three models", variant="primary", elem_id="ask")
        with gr.Row():
            boxes = [gr.Markdown(label=key, elem_id=f"answer-{key}") for key in DEMO_MODELS]
        gr.Markdown("## What the study measured\n\n" + lab.study_table())
        headline = lab.study_dir / "headline.png"
        if headline.is_file():
            gr.Image(str(headline), show_label=False, interactive=False)
        person.input(questions, person, [marked, question], api_name="questions")
        button.click(ask, [person, question], [marked, *boxes], api_name="ask")
    return app


__all__ = ["THEME", "answer_markdown", "build_app"]
