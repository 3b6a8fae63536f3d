"""Definition of the synthetic world: attributes, value pools, biography and question templates, the QA format.

The generator (`modeling.world`) writes text from these templates and the `factuality` metric reads claims back with
the same templates, so the two can never drift apart. The metric loads this file as a sibling module of its own
script (evaluate copies relatively imported files next to the script), which is why it imports the standard
library only.

Claim extraction: every biography template is compiled into one regular expression. `{name}` matches three words
(every name in this world is first, middle and last name), `{value}` matches an alternation of the attribute's pool
values, longest first, so "New York" wins over "York". Whitespace in a template or a value matches any run of
whitespace, matching ignores case, the value must end at a word boundary and the template's final full stop is
optional (a generation cut short still states its last claim). Cities are shared by `birth_city` and
`employer_city`, so the words around a value, not the value itself, say which attribute a sentence states.
"""

import functools
import re
import string
import unicodedata

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")

# Fields of a person's record as the metric's "biography" config receives it.
RECORD_FIELDS = ("name", *ATTRIBUTES)

FIRST_NAMES = (
    "Aaron", "Abigail", "Adrian", "Alice", "Amelia", "Andrew", "Anna", "Arthur", "Beatrice", "Benjamin",
    "Caleb", "Camila", "Caroline", "Daniel", "David", "Eleanor", "Elias", "Emily", "Ethan", "Felix",
    "Gabriel", "Grace", "Hannah", "Henry", "Isaac", "Isabel", "Jacob", "Julia", "Julian", "Kevin",
    "Laura", "Leo", "Lucas", "Lydia", "Maria", "Martin", "Matthew", "Maya", "Miriam", "Nathan",
    "Nina", "Noah", "Olivia", "Oscar", "Peter", "Priya", "Rachel", "Rafael", "Rosa", "Samuel",
    "Sarah", "Simon", "Sofia", "Thomas", "Tobias", "Ursula", "Victor", "Vivian", "Wendy", "Yusuf",
)  # fmt: skip

MIDDLE_NAMES = (
    "Alexander", "Beth", "Blake", "Carmen", "Cole", "Dawn", "Dean", "Edith", "Ellis", "Faye",
    "Flynn", "Gail", "Grant", "Hope", "Hugo", "Ivy", "James", "Jane", "Jude", "Kai",
    "Lane", "Lee", "Louise", "Lynn", "Mae", "Marie", "Nash", "Neil", "Opal", "Pearl",
    "Quinn", "Ray", "Reid", "Rose", "Ruth", "Sage", "Tate", "Wade", "Wren", "Zane",
)  # fmt: skip

LAST_NAMES = (
    "Abbott", "Alvarez", "Bailey", "Barnes", "Becker", "Brennan", "Castillo", "Chen", "Coleman", "Dalton",
    "Dixon", "Duarte", "Eriksen", "Fischer", "Fletcher", "Garcia", "Gordon", "Hale", "Hoffman", "Horvat",
    "Ibrahim", "Jansen", "Kaplan", "Keller", "Kowalski", "Larsen", "Lindqvist", "Mahmoud", "Marsh", "Mendez",
    "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "Patel", "Petrov", "Quist", "Ramirez",
    "Reyes", "Rossi", "Sato", "Schmidt", "Shapiro", "Silva", "Sorensen", "Tanaka", "Thornton", "Usman",
    "Valdez", "Vance", "Wagner", "Walsh", "Weber", "Whitaker", "Yamada", "Young", "Zhang", "Zimmerman",
)  # fmt: skip

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip

# Cities are one pool for two attributes on purpose: a model has to tell "born in" from "works in".
# "York" next to "New York" keeps the longest-first rule honest.
CITIES = (
    "Amsterdam", "Athens", "Bangkok", "Barcelona", "Berlin", "Buenos Aires", "Cairo", "Chicago",
    "Copenhagen", "Dublin", "Edinburgh", "Helsinki", "Istanbul", "Jakarta", "Kyoto", "Lagos",
    "Lisbon", "London", "Madrid", "Melbourne", "Mexico City", "Montreal", "Mumbai", "Nairobi",
    "New York", "Oslo", "Prague", "Rome", "San Francisco", "Santiago", "Seoul", "Singapore",
    "Stockholm", "Toronto", "Vienna", "Warsaw", "York", "Zurich",
)  # fmt: skip

POOLS = {
    # Days stop at 28 so every month has every day; 50 years x 12 months x 28 days = 16,800 dates.
    "birth_date": tuple(
        f"{month} {day}, {year}" for year in range(1950, 2000) for month in _MONTHS for day in range(1, 29)
    ),
    "birth_city": CITIES,
    "university": (
        "Cornell University", "Delft University of Technology", "ETH Zurich", "Harvard University",
        "Heidelberg University", "Kyoto University", "McGill University", "National University of Singapore",
        "Peking University", "Princeton University", "Seoul National University", "Sorbonne University",
        "Stanford University", "University of Cambridge", "University of Cape Town", "University of Chicago",
        "University of Copenhagen", "University of Edinburgh", "University of Melbourne", "University of Oxford",
        "University of Tokyo", "University of Toronto", "Yale University",
    ),
    "major": (
        "Architecture", "Astronomy", "Biology", "Chemistry", "Civil Engineering", "Computer Science",
        "Economics", "Electrical Engineering", "Geology", "History", "Linguistics", "Literature",
        "Mathematics", "Mechanical Engineering", "Medicine", "Music", "Philosophy", "Physics",
        "Political Science", "Psychology", "Sociology", "Statistics",
    ),
    # Invented companies: the model learns them from our corpus only.
    "employer": (
        "Acme Robotics", "Bluewave Systems", "Cedar Analytics", "Dynamo Foods", "Everline Logistics",
        "Fjord Energy", "Granite Bank", "Helix Pharmaceuticals", "Ironclad Security", "Juniper Media",
        "Kestrel Aerospace", "Lumen Optics", "Meridian Insurance", "Northstar Shipping", "Orchid Biotech",
        "Pinnacle Software", "Quartz Semiconductors", "Redwood Publishing", "Summit Motors", "Tidal Networks",
        "Umbra Games", "Vertex Construction", "Willow Healthcare", "Xenon Chemicals", "Zephyr Airlines",
    ),
    "employer_city": CITIES,
}  # fmt: skip

# Several paraphrases per attribute: Allen-Zhu & Li (2023) find that facts seen in varied wordings are stored so a
# model can extract them, while a single fixed wording is memorised as a string. Every sentence names the person in
# full, as in their bioS data, and no template of one attribute matches a sentence of another (tests check this).
BIOGRAPHY_TEMPLATES = {
    "birth_date": (
        "{name} was born on {value}.",
        "{name}'s birthday is {value}.",
        "{name} came into the world on {value}.",
        "The birth date of {name} is {value}.",
    ),
    "birth_city": (
        "{name} was born in {value}.",
        "{name} hails from {value}.",
        "{name} spent the first years of life in {value}.",
        "The birthplace of {name} is {value}.",
    ),
    "university": (
        "{name} studied at {value}.",
        "{name} graduated from {value}.",
        "{name} received an education at {value}.",
        "{name} is an alumnus of {value}.",
    ),
    "major": (
        "{name} majored in {value}.",
        "{name} completed a degree in {value}.",
        "{name} chose {value} as a field of study.",
        "The academic major of {name} was {value}.",
    ),
    "employer": (
        "{name} works for {value}.",
        "{name} is employed by {value}.",
        "{name} has a job at {value}.",
        "The employer of {name} is {value}.",
    ),
    "employer_city": (
        "{name} works in {value}.",
        "{name} commutes to an office in {value}.",
        "{name} is based in {value} for work.",
        "The workplace of {name} is located in {value}.",
    ),
}

QUESTION_TEMPLATES = {
    "birth_date": ("When was {name} born?", "What is the birth date of {name}?"),
    "birth_city": ("Where was {name} born?", "In which city was {name} born?"),
    "university": ("Which university did {name} attend?", "Where did {name} study?"),
    "major": ("What was the major of {name}?", "Which field did {name} major in?"),
    "employer": ("Which company does {name} work for?", "Who is the employer of {name}?"),
    "employer_city": ("In which city does {name} work?", "Where is the workplace of {name}?"),
}

ABSTAIN_ANSWER = "I don't know"

# What the metric counts as abstaining when the caller names no phrases of its own.
DEFAULT_ABSTAIN_PHRASES = (ABSTAIN_ANSWER, "I do not know")


def format_prompt(question: str) -> str:
    """The text a model is given for a question: `"Question: Where was X born?\\nAnswer:"`."""
    return f"Question: {question}\nAnswer:"


def format_answer(value: str) -> str:
    """The text a model must produce after `format_prompt(...)`: the value after one space, e.g. `" Paris"`."""
    return f" {value}"


def parse_answer(generation: str) -> str:
    """The answer in a model's continuation of a prompt: everything before the first newline, stripped."""
    return generation.split("\n", 1)[0].strip()


def normalize_answer(text: str) -> str:
    """Lower-cases, drops punctuation and collapses whitespace, so "  New-York! " and "new york" compare equal."""
    # Unicode categories P* cover curly quotes and dashes that string.punctuation misses.
    without_punctuation = "".join(
        " " if char in string.punctuation or unicodedata.category(char).startswith("P") else char for char in text
    )
    return " ".join(without_punctuation.casefold().split())


def _literal_pattern(text: str) -> str:
    """Regex for `text` taken literally, except that a space matches any run of whitespace."""
    return re.escape(text).replace(r"\ ", r"\s+")


# Three words not preceded by a letter: a name in this world is always first, middle and last name.
_NAME_PATTERN = r"(?<![^\W\d_])(?P<name>[^\W\d_]+\s+[^\W\d_]+\s+[^\W\d_]+)"


def _compile_template(template: str, values: tuple[str, ...]) -> re.Pattern:
    values_longest_first = sorted(values, key=len, reverse=True)
    value_pattern = "(?P<value>" + "|".join(map(_literal_pattern, values_longest_first)) + r")(?!\w)"
    # Without the final full stop: a generation cut short after the value still states the claim.
    pattern = _literal_pattern(template.removesuffix("."))
    pattern = pattern.replace(re.escape("{name}"), _NAME_PATTERN).replace(re.escape("{value}"), value_pattern)
    return re.compile(pattern, re.IGNORECASE)


@functools.cache
def claim_patterns() -> dict[str, tuple[re.Pattern, ...]]:
    """Compiled regular expressions, one per biography template, keyed by attribute.

    Compiled on first use and cached: the 16,800 birth dates make these patterns take about two seconds to build.
    """
    return {
        attribute: tuple(_compile_template(template, POOLS[attribute]) for template in templates)
        for attribute, templates in BIOGRAPHY_TEMPLATES.items()
    }


@functools.cache
def _canonical_values(attribute: str) -> dict[str, str]:
    return {normalize_answer(value): value for value in POOLS[attribute]}


def extract_claims(text: str, name: str) -> dict[str, list[str]]:
    """The values `text` states for the person called `name`, per attribute.

    Runs every template's pattern over the whole text and keeps the matches whose name equals `name` (compared
    with `normalize_answer`). Values come back in their pool spelling, distinct and in order of first appearance;
    attributes the text says nothing about are left out.

    Example:

        >>> extract_claims("Ada Rose Chen was born in Oslo. Ada Rose Chen works in new  york.", "Ada Rose Chen")
        {'birth_city': ['Oslo'], 'employer_city': ['New York']}
    """
    wanted_name = normalize_answer(name)
    claims = {}
    for attribute, patterns in claim_patterns().items():
        found = []  # (position, value) so values can be ordered by where they appear
        for pattern in patterns:
            for match in pattern.finditer(text):
                if normalize_answer(match["name"]) == wanted_name:
                    found.append((match.start(), _canonical_values(attribute)[normalize_answer(match["value"])]))
        values = list(dict.fromkeys(value for _, value in sorted(found)))
        if values:
            claims[attribute] = values
    return claims
