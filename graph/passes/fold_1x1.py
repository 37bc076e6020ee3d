"""1x1-conv folding: three rewrites that make fewer, larger convolutions.

- ``fold_conv_bn``: a per-channel scale/shift of a conv's output -- an eval-mode
  ``batch_norm`` (running statistics), or ``mul``/``div``/``add``/``sub`` by a per-channel
  value -- becomes the conv's own weight and bias:
  ``conv(x, w, b) * s + t == conv(x, w * s, b * s + t)``.
- ``merge_1x1_chain``: a pointwise conv (1x1, stride 1, no padding, no groups) reading another
  ungrouped conv, nothing between them, becomes one conv whose weight is the matrix product
  ``W = W2 @ W1`` (and bias ``W2 @ b1 + b2``) -- when that is not more work (below).
- ``merge_parallel``: ungrouped convs with the same geometry reading the same value (an
  Inception module's 1x1 branch and 1x1 reductions) become one conv with the weights
  concatenated along the output channels, whose output is sliced back into the pieces. When
  every piece feeds the same unary elementwise op (ReLU), that op moves before the slices, so
  epilogue fusion can still merge it into the conv.

The fourth form, "a 1x1 stride-1 conv is one GEMM over channels", is a backend dispatch, not a
rewrite: the CPU kernels (``backends/cpu/kernels/conv.py``, algorithm ``gemm1x1``) run the
forward, the input gradient and the weight gradient of such a conv as plain GEMMs per image
(no im2col), and the CUDA backend runs its forward and input gradient as batched GEMMs.

Folded weights are emitted as ops on the parameter leaves (``w * scale``, ``W2 @ W1``,
``concat(w1, w2)``), not computed here: a pass sees no parameter values (they are bound when
the graph is compiled, by reference, so ``load_state_dict`` after compiling and optimizer
updates stay visible), and the ops cost O(weights) per run against O(activations) saved.
Because they are recomputed from the parameters at every run, each rewrite is valid in a
training step's forward graph too, wherever the values the backward graph reads (``keep``)
survive: a kept intermediate is never removed, so a chain whose middle value is saved for the
backward pass is left alone. A kept conv output that becomes a slice keeps its id.
"""

from __future__ import annotations

from collections import defaultdict

from ..ir import Graph, Node
from ..ops import get_op
from ..rewriter import Rewriter

CONV = "conv2d"


# --- shared helpers -------------------------------------------------------------------------


def _static_ids(graph: Graph) -> set[int]:
    """Ids whose values depend on no ``input`` leaf (params, state, constants only)."""
    static: set[int] = set()
    for n in graph.nodes:
        if (n.is_leaf and n.role != "input") or (
            not n.is_leaf and all(i in static for i in n.inputs)
        ):
            static.add(n.id)
    return static


class _Uses:
    """Who reads what in the input graph, and which ids must keep their value."""

    def __init__(self, graph: Graph, keep: frozenset[int]) -> None:
        self.users = graph.users()
        self.pinned = set(keep) | set(graph.roots()) | {s for s, _ in graph.updates}

    def single_use(self, node_id: int) -> bool:
        """Read by exactly one node, and by no other graph, output or update."""
        return node_id not in self.pinned and len(self.users[node_id]) == 1


def _is_pointwise(rw: Rewriter, node: Node) -> bool:
    a = node.attrs
    return (
        node.op == CONV
        and rw[node.inputs[1]].shape[2:] == (1, 1)
        and a["stride"] == (1, 1)
        and a["padding"] == (0, 0)
        and a["groups"] == 1
    )


def _bias(node: Node) -> int | None:
    return node.inputs[2] if len(node.inputs) == 3 else None


def _conv(rw: Rewriter, keep_id: int, template: Node, x: int, w: int, b: int | None) -> None:
    """Redefine ``keep_id`` as ``conv2d(x, w, b)`` with ``template``'s attributes."""
    old = rw[keep_id]
    inputs = (x, w) if b is None else (x, w, b)
    rw.set(Node(keep_id, CONV, inputs, template.attrs, old.shape, old.dtype, old.name))


# --- fold_conv_bn ---------------------------------------------------------------------------


def _per_channel(shape: tuple[int, ...], conv_shape: tuple[int, ...]) -> bool:
    """Whether a value of ``shape`` broadcasts against the conv output as one number per
    output channel (or one number for all)."""
    if len(shape) > len(conv_shape):
        return False
    aligned = (1,) * (len(conv_shape) - len(shape)) + tuple(shape)
    return all(d == 1 or (axis == 1 and d == conv_shape[1]) for axis, d in enumerate(aligned))


class _Folder:
    """Emits the folded weight and bias. A per-channel operand is viewed as (K,) against the
    bias and (K, 1, 1, 1) against the weight (a scalar if it holds one number). The view is
    taken at the leaves: an elementwise computation of per-channel values (eval BatchNorm's
    ``1/sqrt(running_var + eps)``) is emitted again on views of its operands, so that, with
    reshapes (aliases) only at the leaves, the weight's ops and the bias's ops each fuse into
    one small elementwise kernel."""

    def __init__(self, rw: Rewriter, conv: Node) -> None:
        self.rw, self.k, self.name = rw, conv.shape[1], conv.name
        self.w, self.b = conv.inputs[1], _bias(conv)
        self._views: dict[tuple[int, int], int] = {}

    def view(self, node_id: int, rank: int) -> int:
        key = (node_id, rank)
        if key not in self._views:
            self._views[key] = self._view(self.rw[node_id], rank)
        return self._views[key]

    def _view(self, node: Node, rank: int) -> int:
        shape = (self.k, *(1,) * (rank - 1)) if node.size == self.k else ()
        if node.shape == shape:
            return node.id
        if node.op == "reshape":  # same elements in the same order
            return self.view(node.inputs[0], rank)
        # Operands of a per-channel elementwise op are per-channel (or scalars) themselves.
        if not node.is_leaf and get_op(node.op).category == "elementwise":
            inputs = [self.view(i, rank) for i in node.inputs]
            return self.rw.add(node.op, inputs, self.name, **dict(node.attrs)).id
        return self.rw.add("reshape", [node.id], self.name, shape=shape).id

    def op(self, op: str, a: int, b: int) -> int:
        return self.rw.add(op, [a, b], self.name).id

    def scale(self, op: str, factor: int) -> None:
        """weight, bias ``op``= factor (op: mul or div)."""
        self.w = self.op(op, self.w, self.view(factor, 4))
        if self.b is not None:
            self.b = self.op(op, self.b, self.view(factor, 1))

    def shift(self, op: str, term: int) -> None:
        """bias ``op``= term (op: add or sub); a missing bias starts at zero."""
        term = self.view(term, 1)
        if self.b is None:
            term = term if op == "add" else self.rw.add("neg", [term], self.name).id
            self.b = self.bias_shaped(term)
        else:
            self.b = self.op(op, self.b, term)

    def bias_shaped(self, node_id: int) -> int:
        if self.rw[node_id].shape == (self.k,):
            return node_id
        return self.rw.add("broadcast_to", [node_id], self.name, shape=(self.k,)).id

    def batch_norm(self, mean: int, inv_std: int, gamma: int, beta: int) -> None:
        """(conv + b - mean) * inv_std * gamma + beta."""
        self.w = self.op("mul", self.op("mul", self.w, self.view(inv_std, 4)), self.view(gamma, 4))
        m = self.view(mean, 1)
        centered = (
            self.op("sub", self.b, m)
            if self.b is not None
            else self.rw.add("neg", [m], self.name).id
        )
        normalized = self.op("mul", self.op("mul", centered, self.view(inv_std, 1)),
                             self.view(gamma, 1))  # fmt: skip
        self.b = self.bias_shaped(self.op("add", normalized, self.view(beta, 1)))


def _fold(rw: Rewriter, node: Node, conv: Node, static: set[int]) -> tuple[int, int] | None:
    """The folded (weight, bias) when ``node`` is a per-channel affine map of ``conv``'s
    output by values that depend on no input, else None (nothing emitted)."""
    ins = node.inputs
    others = [i for i in ins if i != conv.id]
    if ins.count(conv.id) != 1 or not all(
        i in static and _per_channel(rw[i].shape, conv.shape) for i in others
    ):
        return None
    first = ins[0] == conv.id
    f = _Folder(rw, conv)
    if node.op == "batch_norm" and first:
        f.batch_norm(*ins[1:])
    elif node.op == "mul" or (node.op == "div" and first):
        f.scale(node.op, others[0])
    elif node.op == "add" or (node.op == "sub" and first):
        f.shift(node.op, others[0])
    else:
        return None
    return f.w, f.b


def fold_conv_bn(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Fold per-channel scale/shift ops (eval BatchNorm included) into the conv they follow,
    when the conv's output has no other reader and the scale/shift depend on no input."""
    rw, uses, static = Rewriter(graph, keep), _Uses(graph, keep), _static_ids(graph)
    for original in graph.ops():
        node = rw[original.id]
        if node.op not in ("batch_norm", "mul", "div", "add", "sub"):
            continue
        for conv_id in dict.fromkeys(node.inputs):
            conv = rw[conv_id]
            if (
                conv.op != CONV
                or conv_id in static
                or not uses.single_use(conv_id)
                or conv.shape != node.shape
            ):
                continue
            folded = _fold(rw, node, conv, static)
            if folded is not None:
                _conv(rw, node.id, conv, conv.inputs[0], *folded)
                rw.remove(conv_id)
                break
    return rw.build()


# --- merge_1x1_chain ------------------------------------------------------------------------


def chain_pays(first_weight: tuple[int, ...], second_out: int, pixels: int) -> bool:
    """Whether one conv with the product weight costs no more multiply-adds than the two
    convs: per output pixel K2*R against K1*R + K2*K1 (R = C*KH*KW of the first conv), plus
    the K2*K1*R of the weight product, paid once per run. A 1x1 reduction (K1 small) followed
    by an expansion (K2 large) must stay two convs."""
    k1, c, kh, kw = first_weight
    r, k2 = c * kh * kw, second_out
    return pixels * k2 * r + k2 * k1 * r <= pixels * (k1 * r + k2 * k1)


def merge_1x1_chain(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """``conv1x1(conv(x, W1, b1), W2, b2)`` -> ``conv(x, W2 @ W1, W2 @ b1 + b2)`` for an
    ungrouped first conv (any kernel, stride, padding, dilation) whose output nothing else
    reads, when ``chain_pays``."""
    rw, uses = Rewriter(graph, keep), _Uses(graph, keep)
    for original in graph.ops():
        node = rw[original.id]
        if not _is_pointwise(rw, node):
            continue
        first = rw[node.inputs[0]]
        if first.op != CONV or first.attrs["groups"] != 1 or not uses.single_use(first.id):
            continue
        w1_shape = rw[first.inputs[1]].shape
        n, k2, oh, ow = node.shape
        if not chain_pays(w1_shape, k2, n * oh * ow):
            continue
        k1, name = w1_shape[0], node.name
        w2 = rw.add("reshape", [node.inputs[1]], name, shape=(k2, k1)).id
        r = w1_shape[1] * w1_shape[2] * w1_shape[3]
        w1 = rw.add("reshape", [first.inputs[1]], name, shape=(k1, r)).id
        product = rw.add("matmul", [w2, w1], name).id
        weight = rw.add("reshape", [product], name, shape=(k2, *w1_shape[1:])).id
        bias = None
        if _bias(first) is not None:
            b1 = rw.add("reshape", [_bias(first)], name, shape=(k1, 1)).id
            mixed = rw.add("matmul", [w2, b1], name).id
            bias = rw.add("reshape", [mixed], name, shape=(k2,)).id
        if _bias(node) is not None:
            bias = _bias(node) if bias is None else rw.add("add", [bias, _bias(node)], name).id
        _conv(rw, node.id, first, first.inputs[0], weight, bias)
        rw.remove(first.id)
    return rw.build()


# --- merge_parallel -------------------------------------------------------------------------


def _shared_activation(rw: Rewriter, uses: _Uses, convs: list[Node]) -> list[Node] | None:
    """The users of each conv when every conv (none kept) feeds only one unary elementwise op
    and these ops are all alike (same op and attributes): the op can run before the slices."""
    acts = []
    for c in convs:
        if not uses.single_use(c.id):
            return None
        act = rw[uses.users[c.id][0]]
        unary = len(act.inputs) == 1 and act.shape == c.shape  # (not broadcast_to)
        if not unary or get_op(act.op).category != "elementwise":
            return None
        acts.append(act)
    first = acts[0]
    same = all(a.op == first.op and dict(a.attrs) == dict(first.attrs) for a in acts)
    return acts if same else None


def _merge_group(rw: Rewriter, uses: _Uses, convs: list[Node]) -> None:
    first, name = convs[0], convs[0].name
    x, dtype = first.inputs[0], first.dtype
    sizes = [c.shape[1] for c in convs]
    weight = rw.add("concat", [c.inputs[1] for c in convs], name, axis=0).id
    bias = None
    if any(_bias(c) is not None for c in convs):
        parts = [
            _bias(c) if _bias(c) is not None else rw.add_const([0.0] * c.shape[1], dtype).id
            for c in convs
        ]
        bias = rw.add("concat", parts, name, axis=0).id
    inputs = [x, weight] + ([bias] if bias is not None else [])
    wide = rw.add(CONV, inputs, name, **dict(first.attrs))
    acts = _shared_activation(rw, uses, convs)
    source, targets = wide.id, convs
    if acts is not None:
        a = acts[0]
        source, targets = rw.add(a.op, [wide.id], a.name, **dict(a.attrs)).id, acts
    start = 0
    for target, size in zip(targets, sizes):  # each piece keeps its id (kept ids too)
        attrs = {"axis": 1, "start": start, "stop": start + size}
        rw.set(Node(target.id, "slice", (source,), attrs, target.shape, dtype, target.name))
        start += size
    if acts is not None:
        for c in convs:  # their only reader now reads the activated wide output
            rw.remove(c.id)


def merge_parallel(graph: Graph, keep: frozenset[int] = frozenset()) -> Graph:
    """Ungrouped convs reading the same value with the same kernel size, stride, padding and
    dilation -> one conv with the weights (and biases) concatenated along the output
    channels, sliced back into the original outputs."""
    rw, uses, static = Rewriter(graph, keep), _Uses(graph, keep), _static_ids(graph)
    groups: dict[tuple, list[Node]] = defaultdict(list)
    for node in graph.ops():
        # Weights from params only: one computed from a sibling's output would make a cycle.
        if node.op == CONV and node.attrs["groups"] == 1 and static.issuperset(node.inputs[1:]):
            key = (node.inputs[0], graph[node.inputs[1]].shape[1:], node.dtype, *node.attrs.items())
            groups[key].append(node)
    for convs in groups.values():
        if len(convs) > 1:
            _merge_group(rw, uses, convs)
    return rw.build()
