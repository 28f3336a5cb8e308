"""`InputError` and the checks every settings dataclass runs on its numeric fields.

A wrong input gets one error class whose message names the field, the value and what is valid, before
any work starts. It subclasses `ValueError`, so code catching `ValueError` keeps working.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Iterable

__all__ = ["InputError", "NonFiniteError", "check_fields", "check_number", "first_non_finite"]


class InputError(ValueError):
    """Something a user passed is wrong; the message says what and how to fix it."""


class NonFiniteError(InputError):
    """A loss, gradient, mask score or weight is NaN or infinite; the message names which, where and the fix.

    An input error too: its cause is what the user chose (weights, data, learning rates), and continuing would
    prune on garbage without a word.
    """


def check_fields(settings: Any) -> None:
    """Refuse a field of the dataclass `settings` whose value is not of its annotated type, or not finite.

    Fields annotated `int` take whole numbers (not `bool`; NumPy's too), `float` fields any finite real number,
    `bool` fields `True` or `False`, `str` fields text; `None` passes where the annotation allows it. NaN and
    infinities are refused: they pass `< 0` range checks and would later prune everything without a word. Run
    first, before anything reads a field (`None.partition` would otherwise fail with an AttributeError).

    Args:
        settings: A dataclass instance (`SparseArgs`, `PostTrainingArgs`, `ImportancePruningArgs`, ...).

    Raises:
        InputError: Naming the first field whose value is not valid.
    """
    hints = typing.get_type_hints(type(settings))
    for field in dataclasses.fields(settings):
        annotation = hints.get(field.name)
        value = getattr(settings, field.name)
        optional = type(None) in typing.get_args(annotation)
        if value is None and optional:
            continue
        where = f"{type(settings).__name__}.{field.name}"
        if _plain_kind(annotation) is bool:
            if not isinstance(value, bool):
                raise InputError(f"{where} must be True or False, got {value!r} ({type(value).__name__}).")
            continue
        if _plain_kind(annotation) is str:
            if not isinstance(value, str):
                raise InputError(
                    f"{where} must be text{' or None' if optional else ''}, got {value!r} ({type(value).__name__})."
                )
            continue
        kinds = _numeric_kinds(annotation)
        if not kinds:
            continue
        wanted = "a whole number" if kinds == {int} else "a real number"
        whole = isinstance(value, numbers.Integral)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (kinds == {int} and not whole):
            raise InputError(
                f"{where} must be {wanted}{' or None' if optional else ''}, got {value!r} ({type(value).__name__})."
            )
        if not math.isfinite(value):
            raise InputError(
                f"{where} must be finite, got {value!r}: NaN and infinities would silently break the pruning "
                "schedule or the search."
            )


def check_number(
    where: str,
    value: Any,
    *,
    whole: bool = False,
    minimum: float | None = None,
    positive: bool = False,
    allow_none: bool = False,
) -> None:
    """Refuse a function argument that is not a finite number in range; `check_fields` for plain arguments.

    Args:
        where: The argument, as the message names it (`"tune_masks(max_scale=...)"`).
        value: What was passed.
        whole: Take whole numbers only (not `bool`: `True` as a count is a slip, not a 1).
        minimum: The smallest valid value, if any.
        positive: Refuse 0 and below.
        allow_none: `None` is valid (it means "no limit" for such arguments).

    Raises:
        InputError: Naming `where`, the value and what is valid. NaN is refused here: it fails every
            comparison, so it would pass a `value < minimum` check and then silently accept everything.
    """
    if value is None and allow_none:
        return
    valid = "a whole number" if whole else "a finite number"
    if positive:
        valid += " > 0"
    elif minimum is not None:
        valid += f" >= {minimum:g}"
    if allow_none:
        valid += " or None"
    wrong_kind = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if wrong_kind or (whole and not isinstance(value, numbers.Integral)):
        raise InputError(f"{where} must be {valid}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        raise InputError(f"{where} must be {valid}, got {value!r}.")


def _plain_kind(annotation: Any) -> type | None:
    """`bool` or `str` for `bool`, `str` and their optional forms; None for anything else."""
    kinds = {kind for kind in (typing.get_args(annotation) or (annotation,)) if kind is not type(None)}
    return next(iter(kinds)) if len(kinds) == 1 and next(iter(kinds)) in (bool, str) else None


def _numeric_kinds(annotation: Any) -> set[type]:
    """`{int}`, `{float}` (a float field also takes ints) or an empty set for other annotations."""
    kinds = {kind for kind in (typing.get_args(annotation) or (annotation,)) if kind in (int, float)}
    return {float} if float in kinds else kinds


def first_non_finite(named_tensors: Iterable[tuple[Any, torch.Tensor | None]]) -> Any:
    """The key (usually the name) of the first tensor holding NaN or an infinity, or None when all are finite.

    The tensors are checked with one device synchronisation in all (not one per tensor), and with one
    multi-tensor reduction: the trainer checks its scores and their gradients at every step.
    """
    import torch  # here: the settings checks above need no torch

    # Integer and empty tensors are always finite. The largest magnitude of each tensor is NaN where it holds
    # a NaN and infinite where it holds an infinity, and unlike a sum of squares it cannot overflow.
    named = [
        (name, tensor) for name, tensor in named_tensors
        if tensor is not None and tensor.numel() and (tensor.is_floating_point() or tensor.is_complex())
    ]
    if not named:
        return None
    largest = torch._foreach_norm([tensor.detach() for _, tensor in named], ord=math.inf)
    first = largest[0]
    if any(value.dtype != first.dtype or value.device != first.device for value in largest):
        largest = [value.to(first.device, torch.float32) for value in largest]
    finite = torch.stack(largest).isfinite()
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]
