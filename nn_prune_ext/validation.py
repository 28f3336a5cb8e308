"""`InputError` and the checks every settings dataclass runs on its numeric fields.

A wrong input gets one error class whose message names the field, the value and what is valid, before
any work starts. It subclasses `ValueError`, so code catching `ValueError` keeps working.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from typing import Any, Iterable

__all__ = [
    "InputError",
    "NonFiniteError",
    "check_fields",
    "check_flag",
    "check_instance",
    "check_known_fields",
    "check_model",
    "check_real",
    "check_whole",
    "describe",
    "first_non_finite",
    "refuse_unknown_keywords",
    "settings_with",
]


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
                raise InputError(f"{where} must be True or False, got {describe(value)}.")
            continue
        if _plain_kind(annotation) is str:
            if not isinstance(value, str):
                raise InputError(
                    f"{where} must be text{' or None' if optional else ''}, got {describe(value)}."
                )
            continue
        kinds = _numeric_kinds(annotation)
        if not kinds:
            continue
        wanted = "a whole number" if kinds == {int} else "a real number"
        whole = isinstance(value, numbers.Integral)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (kinds == {int} and not whole):
            raise InputError(
                f"{where} must be {wanted}{' or None' if optional else ''}, got {describe(value)}."
            )
        if not _is_finite(value):
            raise InputError(
                f"{where} must be finite, got {_short(value)}: NaN, infinities and numbers beyond a float's range "
                "would silently break the pruning schedule or the search."
            )


def _is_finite(value: numbers.Real) -> bool:
    """`math.isfinite`, False (not an OverflowError) for a whole number beyond a float's range (10**400)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _short(value: Any) -> str:
    """`repr(value)`, shortened so that a 400-digit number or a whole model does not flood the message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:36]}...{text[-36:]} ({len(text)} characters)"


def describe(value: Any) -> str:
    """A bad value for an error message: its shortened `repr` and its type, e.g. `'2' (str)`."""
    return f"{_short(value)} ({type(value).__name__})"


def check_flag(value: Any, name: str) -> bool:
    """Refuse a flag that is not `True` or `False`: `"no"` and `2` are truthy and would silently mean True.

    Args:
        value: The argument (NumPy's `bool_` is taken too).
        name: How the message names it, e.g. `"optimize_model(inplace=...)"`.

    Returns:
        `value` as a `bool`.

    Raises:
        InputError: If `value` is not a boolean.
    """
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {describe(value)}.")


def check_whole(value: Any, name: str, minimum: int | None = None, *, optional: bool = False) -> int | None:
    """Refuse an argument that is not a whole number `>= minimum`.

    `True`, `2.0`, `1.5`, `"10"` and NaN are all refused: a float count is usually a fraction passed where a
    step count belongs, and Python would truncate or compare it without a word.

    Args:
        value: The argument (NumPy integers are taken).
        name: How the message names it.
        minimum: The smallest valid value, or `None` for no bound.
        optional: Whether `None` is valid (it is returned as is).

    Returns:
        `value` as an `int`, or `None`.

    Raises:
        InputError: Naming `name`, the value and what is valid.
    """
    valid = "a whole number" + (f" >= {minimum}" if minimum is not None else "")
    return _checked_number(
        value, name, numbers.Integral, valid, optional, lambda number: minimum is None or number >= minimum, int
    )


def check_real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    optional: bool = False,
    above_minimum: bool = False,
) -> float | None:
    """Refuse an argument that is not a finite real number in `[minimum, maximum]`.

    Args:
        value: The argument (ints and NumPy numbers are taken; `bool` is not).
        name: How the message names it.
        minimum: Inclusive lower bound, or `None`.
        maximum: Inclusive upper bound, or `None`.
        optional: Whether `None` is valid (it is returned as is).
        above_minimum: Refuse `minimum` itself too (a scale or temperature must be > 0).

    Returns:
        `value` as a `float`, or `None`.

    Raises:
        InputError: Naming `name`, the value and what is valid.
    """
    lower = ">" if above_minimum else ">="
    bounds = [f"{sign} {bound}" for sign, bound in ((lower, minimum), ("<=", maximum)) if bound is not None]
    valid = " ".join(["a finite real number", " and ".join(bounds)]).strip()

    def in_range(number: numbers.Real) -> bool:
        too_low = minimum is not None and (number <= minimum if above_minimum else number < minimum)
        return _is_finite(number) and not too_low and (maximum is None or number <= maximum)

    return _checked_number(value, name, numbers.Real, valid, optional, in_range, float)


def _checked_number(
    value: Any,
    name: str,
    kind: type,
    valid: str,
    optional: bool,
    in_range: typing.Callable[[Any], bool],
    convert: typing.Callable[[Any], Any],
) -> Any:
    """`convert(value)` for a number of `kind` (never `bool`) that is `in_range`; `None` where optional.

    Raises:
        InputError: `"{name} must be {valid}, got ..."`, with the value's type where it is no number of `kind`.
    """
    if value is None and optional:
        return None
    valid += " or None" if optional else ""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"{name} must be {valid}, got {describe(value)}.")
    if not in_range(value):
        raise InputError(f"{name} must be {valid}, got {_short(value)}.")
    return convert(value)


def check_instance(value: Any, expected: type, name: str, *, optional: bool = False, hint: str = "") -> Any:
    """Refuse an argument that is not an instance of `expected` (a settings or masks object, say).

    Args:
        value: The argument.
        expected: The class it must be an instance of.
        name: How the message names it, e.g. `"patch_model: sparse_args"`.
        optional: Whether `None` is valid.
        hint: How to make a valid one, appended to the message.

    Returns:
        `value`.

    Raises:
        InputError: `"{name} must be a {expected}, got {type}; {hint}."`
    """
    if isinstance(value, expected) or (value is None and optional):
        return value
    article = "an" if expected.__name__[:1] in "AEIO" else "a"  # "a UnitGradients"
    raise InputError(
        f"{name} must be {article} {expected.__name__}{' or None' if optional else ''}, got {type(value).__name__}"
        + (f"; {hint}." if hint else ".")
    )


def settings_with(settings_class: type, settings: Any, overrides: dict[str, Any], where: str, hint: str) -> Any:
    """The settings a function runs with: `settings` (or the defaults) with keyword `overrides` applied.

    Args:
        settings_class: The settings dataclass (`PostTrainingArgs`, `ImportancePruningArgs`, ...).
        settings: An instance of it, or None for its defaults.
        overrides: Fields passed as keywords.
        where: The function, for the messages.
        hint: How to pass valid settings, for the message about `settings` of another type.

    Returns:
        A `settings_class` instance (a new one where there are overrides).

    Raises:
        InputError: For `settings` of another type, or a keyword that is not a field (naming the closest field).
    """
    check_instance(settings, settings_class, f"{where}: args", optional=True, hint=hint)
    check_known_fields(settings_class, overrides, where)
    if settings is None:
        return settings_class(**overrides)
    return dataclasses.replace(settings, **overrides) if overrides else settings


def check_model(model: Any, where: str, argument: str = "model") -> None:
    """Refuse a model argument that is not a `torch.nn.Module`.

    A model type name such as `"bert"` or a checkpoint path would otherwise pass `get_layout` (which takes
    type names and configs) and fail much later with an AttributeError about `str`.

    Args:
        model: The argument.
        where: The function it was passed to, for the message.
        argument: The argument's name, for the message.

    Raises:
        InputError: If `model` is not a module.
    """
    import torch  # here: importing this module (settings checks) must not import torch

    if not isinstance(model, torch.nn.Module):
        hint = " (a path or model name: load it first, e.g. with from_pretrained)" if isinstance(model, str) else ""
        raise InputError(
            f"{where}: {argument} must be a torch.nn.Module (a loaded transformers model), got {describe(model)}"
            f"{hint}."
        )


def check_known_fields(settings_class: type, names: Iterable[str], where: str) -> None:
    """Refuse keyword arguments that are not fields of the dataclass `settings_class`, listing its fields.

    Args:
        settings_class: A dataclass (`SparseArgs`, `ImportancePruningArgs`, ...).
        names: The keyword names given.
        where: The function they were passed to, for the message.

    Raises:
        InputError: Naming the unknown keywords, and the closest field for each where one is close.
    """
    fields = [field.name for field in dataclasses.fields(settings_class)]
    unknown = sorted(set(names) - set(fields))
    if not unknown:
        return
    import difflib  # only on the error path

    guesses = []
    for name in unknown:
        close = difflib.get_close_matches(name, fields, n=1)
        guesses.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise InputError(
        f"{where} got unknown keyword{'s' if len(unknown) > 1 else ''} {', '.join(guesses)}: the fields of "
        f"{settings_class.__name__} are {', '.join(fields)}."
    )


def refuse_unknown_keywords(settings_class: type) -> type:
    """Class decorator: the dataclass refuses a misspelled keyword with an `InputError` listing its fields.

    Without it `SparseArgs(final_treshold=0.1)` fails with Python's bare TypeError about `__init__`. Apply it
    above `@dataclass`; positional arguments and the signature (for `HfArgumentParser`) are unchanged.
    """
    init = settings_class.__init__

    @functools.wraps(init)
    def checked_init(self, *args: Any, **kwargs: Any) -> None:
        check_known_fields(settings_class, kwargs, f"{settings_class.__name__}(...)")
        init(self, *args, **kwargs)

    settings_class.__init__ = checked_init
    return settings_class


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
