"""The architecture model: the one place that knows where a family keeps its prunable parts.

- `layout`: `ArchitectureLayout` (layer list, the module of every role, config attributes) and its
  resolution on a model (`LayerModules`);
- `projections`: adapters that read and cut a role as an `(out, in)` matrix whatever the storage
  (`nn.Linear`, `Conv1D`) or fusion (`[q | k | v]`, per-head interleaving, `[gate | up]`);
- `registry`: `model_type` -> layout;
- `inputs`: made-up inputs of a family's input kind, for checks and timing;
- `families`: the built-in layouts.
"""

from .layout import (
    ArchitectureLayout,
    AttentionBlock,
    LayerModules,
    LayoutMismatchError,
    SlicedProjection,
    join_projections,
    split_projections,
    store_projections,
)
from .inputs import check_batch, probe_inputs, tokens_per_example
from .projections import Projection, ProjectionSite, SplitProjection, UnsupportedProjectionError
from .registry import (
    UnsupportedArchitectureError,
    get_layout,
    refuse_model_type,
    register_layout,
    supported_model_types,
)
from . import families  # noqa: F401  (registers the built-in layouts)

__all__ = [
    "ArchitectureLayout",
    "AttentionBlock",
    "LayerModules",
    "LayoutMismatchError",
    "Projection",
    "ProjectionSite",
    "SplitProjection",
    "UnsupportedArchitectureError",
    "UnsupportedProjectionError",
    "get_layout",
    "refuse_model_type",
    "register_layout",
    "supported_model_types",
    "SlicedProjection",
    "probe_inputs",
    "tokens_per_example",
    "check_batch",
    "split_projections",
    "store_projections",
    "join_projections",
]
