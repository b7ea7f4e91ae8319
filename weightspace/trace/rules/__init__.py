"""Channel rules: how each op moves neuron axes.

A rule receives the :class:`~weightspace.trace.axes.Ctx`, the concrete
argument values (tensors already computed on the example input), their
descriptors and the concrete output, and returns the output's descriptors
(a tuple with one entry per axis for a tensor, a list for tuples, ``None``
for non-tensors). Rules record constraints on ``ctx.state``.

The rules live by op family, each registered where it is defined:

* :mod:`~weightspace.trace.rules._base`: the registries
  (``FUNCTION_RULES``, ``METHOD_RULES``, ``MODULE_RULES``), ``register_*``
  and the ``@function_rule`` / ``@method_rule`` / ``@module_rule``
  decorators, and helpers shared by all rules;
* :mod:`~weightspace.trace.rules.elementwise`: activations, arithmetic,
  reductions, softmax;
* :mod:`~weightspace.trace.rules.shapes`: reshape, transpose, cat, chunk,
  select, indexing;
* :mod:`~weightspace.trace.rules.matmul`: matmul, einsum, attention;
* :mod:`~weightspace.trace.rules.layers`: functional layers (``F.linear``,
  ``F.conv2d``, norms, pooling, ...);
* :mod:`~weightspace.trace.rules.modules`: module rules (``nn.Linear``,
  ``nn.MultiheadAttention``, ...).

Users can teach the tracer new ops::

    from weightspace.trace import register_function_rule, passthrough
    register_function_rule(my_custom_activation, passthrough)
"""

# Importing the submodules registers their rules (in this order).
from weightspace.trace.rules._base import (
    FUNCTION_RULES,
    METHOD_RULES,
    MODULE_RULES,
    Rule,
    function_rule,
    get_arg,
    get_desc,
    is_tensor,
    method_rule,
    module_rule,
    norm_dim,
    param_desc,
    reduce_dims,
    register_function_rule,
    register_method_rule,
    register_module_rule,
    set_roles,
    untracked,
)
from weightspace.trace.rules.elementwise import (
    argreduction,
    cumulative_rule,
    elementwise,
    like_rule,
    masked_fill_rule,
    max_like,
    normalize_rule,
    passthrough,
    reduction,
    softmax,
    factory_rule,
    triangle_rule,
    where_rule,
)
from weightspace.trace.rules.shapes import (
    cat_rule,
    chunk_rule,
    expand_rule,
    flatten_rule,
    getattr_rule,
    getitem_rule,
    movedim_rule,
    narrow_rule,
    permute_rule,
    repeat_rule,
    reshape_rule,
    select_rule,
    size_rule,
    split_rule,
    squeeze_rule,
    stack_rule,
    t_rule,
    tensor_index,
    transpose_rule,
    unbind_rule,
    unsqueeze_rule,
)
from weightspace.trace.rules.matmul import einsum_rule, matmul_rule, sdpa_rule
from weightspace.trace.rules.layers import (
    batch_norm_fn,
    batch_norm_rule,
    conv_fn,
    conv_rule,
    embedding_fn,
    embedding_rule,
    group_norm_fn,
    group_norm_rule,
    interpolate_rule,
    layer_norm_fn,
    layer_norm_rule,
    linear_fn,
    linear_rule,
    pad_rule,
    pool_rule,
)
from weightspace.trace.rules.modules import (
    module_batch_norm,
    module_conv,
    module_embedding,
    module_flatten,
    module_group_norm,
    module_layer_norm,
    module_linear,
    module_mha,
    module_passthrough,
    module_pool,
    module_prelu,
    module_softmax,
    module_unflatten,
)

# Module types with a built-in rule (a snapshot taken at import time).
LEAF_TYPES = tuple(MODULE_RULES)

__all__ = [
    "FUNCTION_RULES", "METHOD_RULES", "MODULE_RULES", "LEAF_TYPES", "Rule",
    "register_function_rule", "register_method_rule", "register_module_rule",
    "function_rule", "method_rule", "module_rule",
    "get_arg", "get_desc", "is_tensor", "norm_dim", "param_desc", "reduce_dims", "set_roles", "untracked",
    # elementwise
    "argreduction", "cumulative_rule", "elementwise", "like_rule", "masked_fill_rule", "max_like",
    "normalize_rule", "passthrough", "reduction", "softmax", "where_rule", "factory_rule", "triangle_rule",
    # shapes
    "cat_rule", "chunk_rule", "expand_rule", "flatten_rule", "getattr_rule", "getitem_rule",
    "movedim_rule", "narrow_rule", "permute_rule", "repeat_rule", "reshape_rule", "select_rule",
    "size_rule", "split_rule", "squeeze_rule", "stack_rule", "t_rule", "tensor_index",
    "transpose_rule", "unbind_rule", "unsqueeze_rule",
    # matmul
    "einsum_rule", "matmul_rule", "sdpa_rule",
    # layers
    "batch_norm_fn", "batch_norm_rule", "conv_fn", "conv_rule", "embedding_fn", "embedding_rule",
    "group_norm_fn", "group_norm_rule", "interpolate_rule", "layer_norm_fn", "layer_norm_rule",
    "linear_fn", "linear_rule", "pad_rule", "pool_rule",
    # modules
    "module_batch_norm", "module_conv", "module_embedding", "module_flatten", "module_group_norm",
    "module_layer_norm", "module_linear", "module_mha", "module_passthrough", "module_pool",
    "module_prelu", "module_softmax", "module_unflatten",
]
