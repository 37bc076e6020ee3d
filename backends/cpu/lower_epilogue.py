"""CPU lowering of the epilogue ops (``graph/passes/epilogue.py``): the producer's kernel
writes the output buffer, then a generated elementwise kernel finishes it in place, reading
each element once more while it is still in cache. One launch, no intermediate buffer.

The producer's kernels are BLAS or hand-written loops, so the epilogue runs as a second sweep
rather than inside their register tiles; what fusion buys here is the buffer and the launch.
"""

from __future__ import annotations

from ...graph.passes.epilogue import EPILOGUE_OPS, producer_node
from ..executable import bind, preparable
from .codegen import elementwise_launch
from .lowering import lower, lowers


@lowers(*EPILOGUE_OPS.values())
def _epilogue(node, graph):
    n = node.attrs["n_main"]
    producer = producer_node(node, graph)
    main, _ = lower(producer, graph)  # the producer's own lowering (or its reference)
    extras = [graph[i].shape for i in node.inputs[n:]]
    expr = node.attrs["scalar"].format(*(f"a{k}" for k in range(1 + len(extras))))
    tail = elementwise_launch(expr, [node.shape, *extras], node.shape)
    raw_shape = producer.shape

    def prepare(inputs, out):
        run_main = bind(main, inputs[:n], out.reshape(raw_shape))
        run_tail = bind(tail, [out, *inputs[n:]], out)

        def run():
            run_main()
            run_tail()

        return run

    return preparable(prepare)
