"""Answer scoring: how a generated answer is compared with its references.

`normalize_answer()` applies the answer normalisation of the official VQA
evaluation; `exact_match()`, `vqa_accuracy()` (min(#matches / 3, 1) over
the annotators' answers) and `answer_accuracy()` (a split's mean, each
reference scored by its kind) build on it. Plain Python on the host:
`keras_pam.scoring.Scorer` calls `answer_accuracy` on its decoded answers.
"""

import re

import numpy as np

__all__ = [
    "answer_accuracy",
    "exact_match",
    "normalize_answer",
    "vqa_accuracy",
]


# Punctuation handled by the VQA evaluation. The apostrophe is not in the
# list (contractions keep it) and the period is handled separately.
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)

# A comma between two digits ("1,000"). When the text contains one, every
# punctuation character is deleted instead of being turned into a space.
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")

# A period that is not followed by a digit. The official script's pattern is
# meant to also keep periods preceded by a digit, but as written it only
# checks the next character; this pattern reproduces what it actually does,
# so "2.5" and ".5" keep their period while "dog." and "u.s" lose it.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

_ARTICLES = frozenset({"a", "an", "the"})

# Contractions written without their apostrophe, mapped to the spelled form.
# Only words that are not themselves English words are listed (no "well",
# "shell", "ill", "id", "its", "wed", ...), so real words are never changed.
_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldntve": "couldn't've",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadntve": "hadn't've",
    "hadn'tve": "hadn't've",
    "hadnt've": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hedve": "he'd've",
    "he'dve": "he'd've",
    "hed've": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "isnt": "isn't",
    "itd": "it'd",
    "itdve": "it'd've",
    "it'dve": "it'd've",
    "itd've": "it'd've",
    "itll": "it'll",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightntve": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightnt've": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "shant": "shan't",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldntve": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "shouldnt've": "shouldn't've",
    "somebodyd": "somebody'd",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldntve": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "wouldnt've": "wouldn't've",
    "yall": "y'all",
    "youd": "you'd",
    "youdve": "you'd've",
    "you'dve": "you'd've",
    "youd've": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}


def _strip_punctuation(text):
    """Applies the VQA evaluation's punctuation rules to `text`."""
    # Decide for every character from the original text, then apply.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    result = text
    for mark in _PUNCTUATION:
        if mark not in text:
            continue
        next_to_space = (mark + " ") in text or (" " + mark) in text
        replacement = "" if (delete_all or next_to_space) else " "
        result = result.replace(mark, replacement)
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", result)


def normalize_answer(text):
    """Normalises an answer string the way the official VQA evaluation does.

    The steps, in order:

    1. Newlines and tabs become spaces; leading and trailing whitespace is
       stripped; the text is lower-cased.
    2. Punctuation (the characters `;/[]"{}()=+\\_-><@,?!` and the
       backtick): a mark that touches a space in the text is deleted, as is
       every mark when the text contains a comma between two digits (so
       `"1,000"` becomes `"1000"`); otherwise the mark becomes a space
       (`"black-white"` becomes `"black white"`). Apostrophes are kept.
    3. Periods are removed unless a digit follows them, so `"2.5"` keeps its
       period and `"dog."` loses it. (This is what the official script's
       period pattern does in practice.)
    4. The text is split on whitespace; number words `"none"`, `"zero"` ..
       `"ten"` become digits; the articles `"a"`, `"an"` and `"the"` are
       dropped; contractions written without an apostrophe are restored
       (`"dont"` becomes `"don't"`); the words are joined with single spaces.

    Args:
        text: str. The answer to normalise.

    Returns:
        The normalised answer, a str.

    Example:

    ```python
    from keras_pam.answer_accuracy import normalize_answer

    normalize_answer("Two")  # "2"
    normalize_answer("  The dog. ")  # "dog"
    normalize_answer("dont")  # "don't"
    normalize_answer("1,000")  # "1000"
    ```
    """
    if not isinstance(text, str):
        raise TypeError(
            f"`text` must be a str. Received: text={text!r} of type "
            f"{type(text).__name__}."
        )
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _strip_punctuation(text)
    words = []
    for word in text.split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


# ---------------------------------------------------------------------------
# Answer scores.
# ---------------------------------------------------------------------------


def exact_match(prediction, reference):
    """Scores a prediction against one reference by exact match.

    Both strings go through `normalize_answer()` before the comparison, so
    case, punctuation, articles and number words do not matter.

    Args:
        prediction: str. The generated answer.
        reference: str. The reference answer (for multiple-choice tasks,
            the correct option).

    Returns:
        `1.0` if the normalised strings are equal, else `0.0`.

    Example:

    ```python
    from keras_pam.answer_accuracy import exact_match

    exact_match("The cat.", "cat")  # 1.0
    exact_match("two", "2")  # 1.0
    exact_match("B", "C")  # 0.0
    exact_match("", "a")  # 0.0: the option "a" is not an article here
    ```
    """
    return float(_normalize_option(prediction) == _normalize_option(reference))


def _normalize_option(text):
    """`normalize_answer`, unless that leaves nothing of a non-empty answer.

    An option letter `"a"` is an article to the VQA normalisation, so both
    `"a"` and an empty answer would normalise to `""` and match.
    """
    normalized = normalize_answer(text)
    if normalized or not text.strip():
        return normalized
    return " ".join(_strip_punctuation(text.strip().lower()).split())


def vqa_accuracy(prediction, answers):
    """Computes the VQA soft accuracy of one prediction.

    The score is `min(n / 3, 1)`, where `n` is the number of annotators'
    answers equal to the prediction after `normalize_answer()`: an answer
    given by three or more annotators scores 1, by two 2/3, by one 1/3.

    This is the simple form of the metric. The official VQA evaluation
    averages `min(n / 3, 1)` over the 10 subsets of 9 annotators, which gives
    slightly different values (for example 0.3 instead of 1/3 for one
    matching annotator out of 10); it is not used here.

    Args:
        prediction: str. The generated answer.
        answers: list of str. The annotators' answers (typically 10).
            Must not be empty.

    Returns:
        The soft accuracy, a float in `[0, 1]`.

    Example:

    ```python
    from keras_pam.answer_accuracy import vqa_accuracy

    answers = ["yes", "yes", "Yes", "no", "yes!"] + ["no"] * 5
    vqa_accuracy("yes", answers)  # 1.0
    vqa_accuracy("maybe", ["maybe", "maybe"] + ["no"] * 8)  # 2/3
    ```
    """
    if isinstance(answers, str):
        raise TypeError(
            "`answers` must be a list of the annotators' answers, not a "
            f"single str. Received: answers={answers!r}. Use "
            "`exact_match()` for a single reference."
        )
    answers = list(answers)
    if not answers:
        raise ValueError("`answers` must contain at least one answer.")
    target = normalize_answer(prediction)
    matches = sum(normalize_answer(answer) == target for answer in answers)
    return min(matches / 3.0, 1.0)


def _score_one(prediction, reference):
    if isinstance(reference, str):
        return exact_match(prediction, reference)
    if isinstance(reference, (list, tuple, np.ndarray)):
        answers = [str(answer) for answer in np.asarray(reference).ravel()]
        if len(answers) == 0:
            raise ValueError(
                "A reference list must contain at least one answer. "
                f"Received an empty reference for prediction {prediction!r}."
            )
        if len(answers) == 1:
            return exact_match(prediction, answers[0])
        return vqa_accuracy(prediction, answers)
    raise TypeError(
        "Each reference must be a str or a list, tuple or NumPy array of "
        f"str. Received: {reference!r} of type {type(reference).__name__}."
    )


def answer_accuracy(predictions, references):
    """Computes the mean answer score over a batch of predictions.

    Each reference decides how its prediction is scored:

    - a str: `exact_match()` (multiple-choice and single-answer tasks);
    - a list, tuple or NumPy array with one answer: `exact_match()` against
      that answer;
    - a list, tuple or NumPy array with several answers: `vqa_accuracy()`
      against the annotators' answers (VQAv2-style tasks).

    Args:
        predictions: sequence of str. The generated answers.
        references: sequence of the same length as `predictions`. Each
            entry is a str or a list, tuple or NumPy array of str.

    Returns:
        The mean score over the batch, a float in `[0, 1]`.

    Example:

    ```python
    from keras_pam.answer_accuracy import answer_accuracy

    predictions = ["A", "two", "red"]
    references = [
        "A",  # exact match: 1.0
        ["2", "2", "two", "3"] + ["3"] * 6,  # 3 annotators: 1.0
        ["blue"],  # one answer, exact match: 0.0
    ]
    answer_accuracy(predictions, references)  # 2/3
    ```
    """
    if isinstance(predictions, str):
        raise TypeError(
            "`predictions` must be a sequence of str, not a single str. "
            f"Received: predictions={predictions!r}."
        )
    predictions = list(predictions)
    references = list(references)
    if len(predictions) != len(references):
        raise ValueError(
            "`predictions` and `references` must have the same length. "
            f"Received {len(predictions)} predictions and "
            f"{len(references)} references."
        )
    if not predictions:
        raise ValueError(
            "`predictions` and `references` must not be empty; the mean "
            "accuracy of an empty batch is undefined."
        )
    scores = [_score_one(p, r) for p, r in zip(predictions, references)]
    return float(np.mean(scores))
