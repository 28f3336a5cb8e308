"""Projection adapters: every role of a layer seen as an `(out, in)` matrix, whatever stores it.

A role is one of the prunable matrices of a layer (`query`, `key`, `value`, `output`, `ffn_gate`,
`ffn_up`, `ffn_down`). The rest of nn_prune_ext reads and cuts roles as `nn.Linear` does: a weight of
shape `(out, in)` and a bias of shape `(out,)`. Families differ in two ways, and both are handled here:

- **storage**: `nn.Linear` stores `(out, in)`; GPT-2's `Conv1D` stores `(in, out)`;
- **fusion**: one module may compute several roles. Its output rows are the roles' rows either one
  role after the other (`"blocks"`: GPT-2's `c_attn` is `[q | k | v]`, Phi-3's `gate_up_proj` is
  `[gate | up]`) or head by head (`"heads"`: GPT-NeoX's `query_key_value` is `[q_h k_h v_h]` per head).

`Projection` is the read view of one role. `SplitProjection` holds a fused or transposed module as
one `nn.Linear` per role while a model is patched for movement pruning (each role gets its own
masked linear); it computes what the stock module computes and reads and writes the stock state
dict, so checkpoints saved while patched load into the stock model. `stock_module` builds a stock
module back from per-role weights (after baking, and when slimming).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D
from ..validation import InputError

__all__ = [
    "ProjectionSite",
    "Projection",
    "SplitProjection",
    "UnsupportedProjectionError",
    "storage_of",
    "stock_module",
    "combine_rows",
    "role_rows",
]

STORAGES = ("linear", "conv1d")
INTERLEAVES = ("blocks", "heads")


class UnsupportedProjectionError(InputError, TypeError):
    """A projection module nn_prune_ext cannot read (neither `nn.Linear` nor `Conv1D`), or of the wrong shape."""


@dataclass(frozen=True)
class ProjectionSite:
    """One module of a layer and the roles it computes, in the order of its output rows.

    Args:
        path: Dotted path of the module inside a layer.
        roles: The roles it computes (one for a plain projection).
        interleave: `"blocks"` (role after role) or `"heads"` (key/value group by group: each role's
            rows of a group in role order; `[q_h k_h v_h]` per head without grouped-query attention,
            `[q_1 .. q_r k v]` per group with it), for fused sites.
    """

    path: str
    roles: tuple[str, ...]
    interleave: str = "blocks"

    @property
    def fused(self) -> bool:
        return len(self.roles) > 1

    def to_dict(self) -> dict:
        return {"path": self.path, "roles": list(self.roles), "interleave": self.interleave}


def storage_of(module: nn.Module, where: str) -> str:
    """`"linear"` or `"conv1d"`: how `module` stores its weight.

    Raises:
        UnsupportedProjectionError: For any other module, naming it.
    """
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, Conv1D):
        return "conv1d"
    raise UnsupportedProjectionError(
        f"{where} is a {type(module).__name__}; nn_prune_ext reads projections stored as nn.Linear (out, in) "
        "or transformers' Conv1D (in, out). Quantized or custom projections are not supported: load the model "
        "unquantized."
    )


def _weight_out_in(module: nn.Module, storage: str) -> torch.Tensor:
    return module.weight if storage == "linear" else module.weight.t()


def role_rows(
    matrix: torch.Tensor, sizes: Sequence[int], index: int, interleave: str, head_dim: int
) -> torch.Tensor:
    """The rows of role `index` in a fused `(out, ...)` matrix or bias.

    A view for `"blocks"`; a copy for `"heads"` (the rows of one role are strided there).

    Args:
        matrix: The fused weight `(out, in)` or bias `(out,)`.
        sizes: Rows of every role, in order.
        index: The role's position.
        interleave: `"blocks"` or `"heads"` (per key/value group; the last role has one head per group).
        head_dim: Rows per head (for `"heads"`).
    """
    start = sum(sizes[:index])
    if interleave == "blocks":
        return matrix[start : start + sizes[index]]
    groups = sizes[-1] // head_dim
    per_group = matrix.unflatten(0, (groups, -1))
    return per_group[:, start // groups : (start + sizes[index]) // groups].flatten(0, 1)


def combine_rows(parts: Sequence[torch.Tensor], interleave: str, head_dim: int, dim: int = 0) -> torch.Tensor:
    """The inverse of `role_rows`: stack per-role rows (or outputs, along `dim`) into the fused order."""
    if len(parts) == 1:
        return parts[0]
    if interleave == "blocks":
        return torch.cat(list(parts), dim=dim)
    dim = dim % parts[0].dim()
    groups = parts[-1].shape[dim] // head_dim
    return torch.cat([part.unflatten(dim, (groups, -1)) for part in parts], dim=dim + 1).flatten(dim, dim + 1)


class Projection:
    """The read view of one role: an `(out, in)` weight and a bias, whatever module stores them.

    Args:
        module: The module the model calls (a plain, fused or transposed projection).
        path: Its dotted path inside the layer.
        role: The role this view reads.
        site: The site of `module` (roles and interleave).
        sizes: Output rows of every role of the site, in order.
        head_dim: Rows per head (for head-interleaved sites).
    """

    def __init__(
        self, module: nn.Module, path: str, role: str, site: ProjectionSite, sizes: Sequence[int], head_dim: int
    ):
        self.module, self.path, self.role, self.site = module, path, role, site
        self.storage = storage_of(module, path)
        self.sizes = list(sizes)
        self.head_dim = head_dim
        self._index = site.roles.index(role)

    @property
    def fused(self) -> bool:
        """Whether the module computes other roles too."""
        return self.site.fused

    @property
    def weight(self) -> torch.Tensor:
        """The role's weight as `(out, in)`: a view of the stored parameter (a copy for head-interleaved sites)."""
        weight = _weight_out_in(self.module, self.storage)
        return self._rows(weight)

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self.module.bias
        return None if bias is None else self._rows(bias)

    @property
    def stored_weight(self) -> nn.Parameter:
        """The module's weight parameter as stored (all roles of a fused site)."""
        return self.module.weight

    @property
    def stored_bias(self) -> nn.Parameter | None:
        return self.module.bias

    @property
    def out_features(self) -> int:
        return self.sizes[self._index]

    @property
    def in_features(self) -> int:
        return int(_weight_out_in(self.module, self.storage).shape[1])

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """This role's output alone: `inputs @ weight.T + bias`."""
        return nn.functional.linear(inputs, self.weight, self.bias)

    def as_stored(self, weight: torch.Tensor) -> torch.Tensor:
        """An `(out, in)` weight of this role in the module's own orientation (for a whole-module role)."""
        if self.fused:
            raise InputError(f"{self.path} stores {list(self.site.roles)} together; {self.role} alone has no stored form.")
        return weight if self.storage == "linear" else weight.t()

    def parameters(self):
        """The stored parameters (shared by all roles of a fused site)."""
        return self.module.parameters()

    def register_forward_pre_hook(self, hook: Callable, **kwargs):
        """A pre-hook on the module: its input is the role's input, also for fused sites."""
        return self.module.register_forward_pre_hook(hook, **kwargs)

    def register_forward_hook(self, hook: Callable, **kwargs):
        """A forward hook on the module; refused for a fused site, whose output holds other roles too."""
        if self.fused:
            raise InputError(
                f"{self.path} computes {list(self.site.roles)} in one output; a hook on the {self.role} output "
                "alone is not possible there."
            )
        return self.module.register_forward_hook(hook, **kwargs)

    def _rows(self, matrix: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            return matrix
        return role_rows(matrix, self.sizes, self._index, self.site.interleave, self.head_dim)

    def __repr__(self) -> str:
        return f"Projection({self.role} at {self.path}: {self.out_features}x{self.in_features}, {self.storage})"


def _meta_linear(in_features: int, out_features: int, bias: bool, dtype: torch.dtype) -> nn.Linear:
    """An `nn.Linear` without storage, whose parameters the caller assigns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")  # an empty slim projection
        return nn.Linear(in_features, out_features, bias=bias, device="meta", dtype=dtype)


def stock_module(
    storage: str,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    interleave: str = "blocks",
    head_dim: int = 1,
    requires_grad: tuple[bool, bool] = (True, True),
) -> nn.Module:
    """A stock projection module holding the given per-role `(out, in)` weights and biases.

    Args:
        storage: `"linear"` or `"conv1d"`.
        weights: One `(out, in)` weight per role, in the site's order.
        biases: One bias per role (all `None` or none `None`).
        interleave: How fused roles are ordered.
        head_dim: Rows per head (for `"heads"`).
        requires_grad: For the new weight and bias parameters.

    Returns:
        An `nn.Linear` or a `Conv1D` with those parameters (no copy for a single `nn.Linear` role). A
        `Conv1D` without inputs is built as an `nn.Linear`: `Conv1D` cannot reshape a zero-width input.
    """
    weight = combine_rows(weights, interleave, head_dim)
    bias = None if biases[0] is None else combine_rows(biases, interleave, head_dim)
    out_features, in_features = weight.shape
    if storage == "linear" or in_features == 0:  # Conv1D cannot reshape a zero-width input
        module = _meta_linear(in_features, out_features, bias is not None, weight.dtype)
        stored = weight
    elif storage == "conv1d":
        if bias is None:
            raise UnsupportedProjectionError("A Conv1D projection needs a bias.")
        with torch.device("meta"):
            module = Conv1D(out_features, in_features)
        stored = weight.t().contiguous()
    else:
        raise InputError(f"storage must be one of {STORAGES}, got {storage!r}.")
    module.weight = nn.Parameter(stored, requires_grad=requires_grad[0])
    if bias is not None:
        module.bias = nn.Parameter(bias, requires_grad=requires_grad[1])
    return module


class SplitProjection(nn.Module):
    """A fused or transposed projection held as one `nn.Linear` per role, while the model is patched.

    Its output equals the stock module's, and its state dict is the stock module's (the stock keys,
    shapes and orientation, next to any mask scores of its roles), so a checkpoint written while
    patched loads into the stock model.

    Args:
        parts: One `nn.Linear` per role, in the site's order (registered under the role's name).
        storage: How the stock module stores its weight.
        interleave: How fused roles are ordered.
        head_dim: Rows per head (for `"heads"`).
    """

    def __init__(self, parts: dict[str, nn.Linear], storage: str, interleave: str, head_dim: int):
        super().__init__()
        for role, linear in parts.items():
            self.add_module(role, linear)
        self.roles = tuple(parts)
        self.storage, self.interleave, self.head_dim = storage, interleave, head_dim
        self.register_state_dict_post_hook(_stock_state_dict)
        self.register_load_state_dict_pre_hook(_split_state_dict)

    @classmethod
    def from_stock(cls, module: nn.Module, site: ProjectionSite, sizes: Sequence[int], head_dim: int, where: str):
        """Split a stock module into one `nn.Linear` per role, sharing nothing with it."""
        storage = storage_of(module, where)
        weight, bias = _weight_out_in(module, storage), module.bias
        parts = {}
        for index, role in enumerate(site.roles):
            rows = role_rows(weight, sizes, index, site.interleave, head_dim) if site.fused else weight
            linear = _meta_linear(rows.shape[1], rows.shape[0], bias is not None, rows.dtype)
            linear.weight = nn.Parameter(rows.detach().clone(), requires_grad=module.weight.requires_grad)
            if bias is not None:
                part_bias = role_rows(bias, sizes, index, site.interleave, head_dim) if site.fused else bias
                linear.bias = nn.Parameter(part_bias.detach().clone(), requires_grad=bias.requires_grad)
            parts[role] = linear.train(module.training)
        return cls(parts, storage, site.interleave, head_dim).train(module.training)

    def parts(self) -> list[nn.Module]:
        return [getattr(self, role) for role in self.roles]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        outputs = [part(hidden_states) for part in self.parts()]
        return combine_rows(outputs, self.interleave, self.head_dim, dim=-1)

    def to_stock(self) -> nn.Module:
        """The stock module with this projection's current weights (the parts must be plain `nn.Linear`)."""
        parts = self.parts()
        for role, part in zip(self.roles, parts):
            if type(part) is not nn.Linear:
                raise TypeError(f"The {role} part is a {type(part).__name__}; bake the model before restoring it.")
        first = parts[0]
        module = stock_module(
            self.storage,
            [part.weight.detach() for part in parts],
            [None if part.bias is None else part.bias.detach() for part in parts],
            self.interleave,
            self.head_dim,
            # One parameter holds every fused role: it stays trainable if any role's was.
            (
                any(part.weight.requires_grad for part in parts),
                first.bias is not None and any(part.bias.requires_grad for part in parts),
            ),
        )
        return module.train(self.training)

    def extra_repr(self) -> str:
        return f"roles={list(self.roles)}, storage={self.storage}, interleave={self.interleave}"


def _stock_state_dict(module: SplitProjection, state_dict: dict, prefix: str, local_metadata) -> None:
    for name in ("weight", "bias"):
        keys = [f"{prefix}{role}.{name}" for role in module.roles]
        if not all(key in state_dict for key in keys):
            continue
        parts = [state_dict.pop(key) for key in keys]
        combined = combine_rows(parts, module.interleave, module.head_dim)
        if name == "weight" and module.storage == "conv1d":
            combined = combined.t().contiguous()
        state_dict[prefix + name] = combined


def _split_state_dict(module: SplitProjection, state_dict: dict, prefix: str, *args) -> None:
    sizes = [getattr(module, role).out_features for role in module.roles]
    for name in ("weight", "bias"):
        stored = state_dict.pop(prefix + name, None)
        if stored is None:
            continue
        if name == "weight" and module.storage == "conv1d":
            stored = stored.t()
        for index, role in enumerate(module.roles):
            rows = role_rows(stored, sizes, index, module.interleave, module.head_dim) if len(sizes) > 1 else stored
            state_dict[f"{prefix}{role}.{name}"] = rows.contiguous()
