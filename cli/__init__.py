"""The command line, ``numbagrad COMMAND`` (also ``python -m numbagrad``):

- ``train MODEL`` (train.py: recipes.py, loop.py, checkpoint.py, plots.py): train a zoo model
  on Fashion-MNIST with its recipe; ``--log``, ``--plot``, ``--checkpoint``/``--resume``;
- ``eval MODEL.npz`` (evaluate.py): a saved model's accuracy, per class, confusion matrix;
- ``graph MODEL -o FILE.svg`` (graph.py): the compiler's graphs as pictures;
- ``profile MODEL`` and ``summary MODEL`` (profile.py): what the passes do, where the time
  goes; the layer table;
- ``compile MODEL.onnx --save FILE.npz`` (compile.py): an ONNX model compiled ahead of time.

``train`` and ``summary`` also take an ``.onnx`` file as MODEL (onnx_model.py).

Every error a user can cause (bad arguments, missing or malformed data, an unfinished backend)
ends with one line ``numbagrad: error: ...`` on stderr and a non-zero exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import distributed
from ..errors import NumbagradError
from . import compile as _compile
from . import evaluate as _evaluate
from . import graph, profile, train
from .common import MODELS, OPTIMIZERS, PROG, Parser, UsageError, build_model, build_optimizer
from .loop import evaluate
from .recipes import RECIPES, recipe_for

__all__ = [
    "MODELS",
    "OPTIMIZERS",
    "RECIPES",
    "UsageError",
    "build_model",
    "build_optimizer",
    "build_parser",
    "evaluate",
    "main",
    "recipe_for",
]


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="numbagrad: a deep-learning compiler on Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    train.add_parser(sub)
    _evaluate.add_parser(sub)
    graph.add_parser(sub)
    profile.add_profile_parser(sub)
    profile.add_summary_parser(sub)
    _compile.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 a numbagrad error, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except SystemExit as e:  # --help (0); argparse never exits otherwise, see Parser
        return e.code if isinstance(e.code, int) else 0
    except UsageError as e:
        return _fail(f"error: {_one_line(e)}", 2)
    except NumbagradError as e:
        return _fail(f"error: {_one_line(e)}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, code: int) -> int:
    """Print ``message``; in an MPI job of several processes, end the whole job (the others
    would wait for this one in their next collective)."""
    where = f" rank {distributed.rank()}:" if distributed.world_size() > 1 else ""
    print(f"{PROG}:{where} {message}", file=sys.stderr)
    distributed.abort(message, code)
    return code


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
