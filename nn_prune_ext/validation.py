"""`InputError` and the checks every settings dataclass runs on its numeric fields.

A wrong input gets one error class whose message names the field, the value and what is valid, before
any work starts. It subclasses `ValueError`, so code catching `ValueError` keeps working.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any

__all__ = ["InputError", "NonFiniteError", "check_numeric_fields"]


class InputError(ValueError):
    """Something a user passed is wrong; the message says what and how to fix it."""


class NonFiniteError(InputError):
    """A loss, gradient, mask score or weight is NaN or infinite; the message names which, where and the fix.

    An input error too: its cause is what the user chose (weights, data, learning rates), and continuing would
    prune on garbage without a word.
    """


def check_numeric_fields(settings: Any) -> None:
    """Refuse a numeric field of the dataclass `settings` that is not a finite real number of its type.

    Fields annotated `int` take whole numbers (not `bool`; NumPy's too), `float` fields any finite real number; `None`
    passes where the annotation allows it. NaN and infinities are refused: they pass `< 0` range checks
    and would later prune everything without a word.

    Args:
        settings: A dataclass instance (`SparseArgs`, `PostTrainingArgs`, `ImportancePruningArgs`).

    Raises:
        InputError: Naming the first field whose value is not valid.
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        kinds = _numeric_kinds(hints.get(field.name))
        if not kinds:
            continue
        value = getattr(settings, field.name)
        optional = type(None) in typing.get_args(hints[field.name])
        if value is None and optional:
            continue
        wanted = "a whole number" if kinds == {int} else "a real number"
        whole = isinstance(value, numbers.Integral)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (kinds == {int} and not whole):
            raise InputError(
                f"{type(settings).__name__}.{field.name} must be {wanted}{' or None' if optional else ''}, "
                f"got {value!r} ({type(value).__name__})."
            )
        if not math.isfinite(value):
            raise InputError(
                f"{type(settings).__name__}.{field.name} must be finite, got {value!r}: NaN and infinities would "
                "silently break the pruning schedule or the search."
            )


def _numeric_kinds(annotation: Any) -> set[type]:
    """`{int}`, `{float}` (a float field also takes ints) or an empty set for other annotations."""
    kinds = {kind for kind in (typing.get_args(annotation) or (annotation,)) if kind in (int, float)}
    return {float} if float in kinds else kinds
