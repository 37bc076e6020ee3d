"""CUDA lowering of the epilogue ops (``graph/passes/epilogue.py``): the producer's kernel
(tiled GEMM, implicit-GEMM convolution, pooling gradient) writes the output buffer, then a
generated elementwise kernel finishes it in place. One launch unit and no intermediate
buffer; the GEMM template's own store stays as it is (it already adds a conv's bias), so the
epilogue is a second, coalesced sweep over an output that is usually still in L2.
"""

from __future__ import annotations

from ...graph.passes.epilogue import EPILOGUE_OPS, producer_node
from .codegen import elementwise_launch, prepared
from .lowering import lower, lowers


@lowers(*EPILOGUE_OPS.values())
def _epilogue(node, graph):
    n = node.attrs["n_main"]
    producer = producer_node(node, graph)
    main, _ = lower(producer, graph)  # the producer's own lowering (or its host reference)
    extras = [graph[i].shape for i in node.inputs[n:]]
    expr = node.attrs["scalar"].format(*(f"a{k}" for k in range(1 + len(extras))))
    tail = elementwise_launch(expr, [node.shape, *extras], node.shape)

    def prepare(inputs, out):
        raw = out.reshape(producer.shape)  # views made once: the launches cache by identity
        main_ins, tail_ins = inputs[:n], [out, *inputs[n:]]

        def run():
            main(main_ins, raw)
            tail(tail_ins, out)

        return run

    launch = prepared(prepare)
    for attr in ("plan", "host_checks"):  # the producer's GEMM plan and input checks
        if hasattr(main, attr):
            setattr(launch, attr, getattr(main, attr))
    return launch
