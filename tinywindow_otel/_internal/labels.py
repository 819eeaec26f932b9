"""Label rules: names a metric may declare, values a series may carry, and series caps.

Label *values* come from data (an exchange's symbol, an error string), so a
value the exposition could not carry is rewritten and counted rather than
raised: invalid UTF-8 (lone surrogates), longer than ``MAX_LABEL_VALUE_LENGTH``,
or the reserved overflow value. Numbers are formatted by ``int``/``float``
themselves, never by a subclass's ``__str__``.
"""

from __future__ import annotations

import math
import re

from .selfmetrics import OVERFLOW_LABEL_VALUE

# Label values longer than this are truncated (and counted): one runaway value
# from a data feed must not make every scrape megabytes long.
MAX_LABEL_VALUE_LENGTH = 256
# What a real label value equal to the overflow marker becomes: the overflow
# series must stay distinguishable from a series a caller labelled that way.
RESERVED_REPLACEMENT = "_overflow_"
# ints with more digits than this are not formatted (str() of a 5000-digit
# int raises on Python >= 3.11 and costs quadratic time before).
_MAX_INT_DIGITS = 4000

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def check_metric_name(name: object) -> str:
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ValueError(f"invalid metric name {name!r}: use letters, digits, '_' and ':', not starting with a digit")
    return name


def check_label_names(metric: str, labelnames, histogram: bool = False) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise TypeError(f"{metric}: labelnames must be a sequence of names, not the string {labelnames!r}")
    names = tuple(labelnames)
    for label in names:
        if not isinstance(label, str) or not LABEL_NAME.match(label) or label.startswith("__"):
            raise ValueError(f"{metric}: invalid label name {label!r} (letters, digits and '_', "
                             f"not starting with a digit or '__')")
        if histogram and label == "le":
            raise ValueError(f"{metric}: a histogram cannot have a label named 'le' (it is the bucket label)")
    if len(set(names)) != len(names):
        raise ValueError(f"{metric}: duplicate label names in {list(names)}")
    return names


def check_max_series(metric: str, limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"{metric}: max_series must be a positive int, got {limit!r}")
    return limit


def canonical(metric: str, labelnames: tuple[str, ...], values: tuple, drops,
              allowed: tuple[tuple[str, ...] | None, ...] | None = None) -> tuple[str, ...]:
    """The label values as the strings a series is stored and exposed under.

    ``allowed`` has, per label, the values it may take (None: any); a value
    outside raises ValueError before anything is rewritten or counted.
    """
    if not labelnames:
        raise ValueError(f"{metric}: this metric has no labels; call it directly instead of .labels()")
    if len(values) != len(labelnames):
        raise ValueError(
            f"{metric}: expected {len(labelnames)} label value(s) ({', '.join(labelnames)}), got {len(values)}"
        )
    result = []
    for i, (name, value) in enumerate(zip(labelnames, values)):
        if isinstance(value, str):
            text = str.__str__(value)  # a str subclass's __str__ is not ours to call
        elif isinstance(value, int) and not isinstance(value, bool):
            text = _int_text(metric, name, int(value))
        elif isinstance(value, float):
            text = float.__repr__(float(value))
        else:
            raise TypeError(
                f"{metric}: label {name!r} must be a string (or number), got {type(value).__name__} {value!r:.80}"
            )
        choices = allowed[i] if allowed is not None else None
        if choices is not None and text not in choices:
            raise ValueError(f"{metric}: label {name!r} must be one of {', '.join(choices)}, "
                             f"got {type(value).__name__} {value!r:.80}")
        if not (text.isascii() and len(text) <= MAX_LABEL_VALUE_LENGTH) or text == OVERFLOW_LABEL_VALUE:
            text = sanitize(metric, name, text, drops)
        result.append(text)
    return tuple(result)


def _int_text(metric: str, label: str, value: int) -> str:
    if value and math.log10(abs(value)) > _MAX_INT_DIGITS:
        raise ValueError(f"{metric}: label {label!r} got an int of more than {_MAX_INT_DIGITS} digits; "
                         f"pass a string")
    return int.__repr__(value)


def sanitize(metric: str, label: str, value: str, drops) -> str:
    """A label value the exposition can carry: valid UTF-8, bounded length, not reserved."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: every scrape would fail to encode
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        drops.sanitized(metric, label, "invalid_utf8")
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        value = value[:MAX_LABEL_VALUE_LENGTH]
        drops.sanitized(metric, label, "too_long")
    if value == OVERFLOW_LABEL_VALUE:
        value = RESERVED_REPLACEMENT
        drops.sanitized(metric, label, "reserved")
    return value
