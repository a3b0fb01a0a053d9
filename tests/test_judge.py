import pytest

from rewards.judge import parse_judgement


@pytest.mark.parametrize(
    "text, parse, low, high, expected",
    [
        ("I would give it 7", "number", 0, 10, 0.7),
        ("Between 3 and 8, I say 8.", "number", 0, 10, 0.8),  # the last number counts
        ("Score: 4\nbecause 9 is too high", "score", 1, 5, 0.75),
        ("score = 2.5", "score", 0, 5, 0.5),
        ("Yes, the answer is right.", "yes_no", 0, 1, 1.0),
        ("yes... on reflection no", "yes_no", 0, 1, 0.0),
        ("no idea", "number", 0, 10, None),  # unparseable
        ("Score: 11", "score", 1, 10, None),  # off the scale
        ("It is 7 out of 10 but no Score line", "score", 0, 10, None),
        ("maybe", "yes_no", 0, 1, None),
    ],
)
def test_parse_judgement(text, parse, low, high, expected):
    value = parse_judgement(text, parse, low, high)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_unknown_parse_mode():
    with pytest.raises(ValueError, match="unknown judge parse mode 'grade'"):
        parse_judgement("1", "grade")
