"""The exceptions numbagrad raises. Every message names what a user can act on:
the op, the layer path and the shapes involved."""


class NumbagradError(Exception):
    """Base class of every numbagrad error."""


class ShapeError(NumbagradError, ValueError):
    """Shapes that do not fit an op, a layer or a compiled step."""


class DTypeError(NumbagradError, TypeError):
    """A dtype an op, a layer or a compiled step does not accept."""


class OpError(NumbagradError, ValueError):
    """An unknown op, or attributes an op does not accept."""


class ClassIndexError(NumbagradError, ValueError):
    """A class index (a loss target, a one_hot input) outside [0, number of classes)."""


class NotDifferentiableError(NumbagradError):
    """Reverse mode reached an op with no VJP rule."""


class DataError(NumbagradError):
    """A dataset file that is missing, unreadable or malformed."""


class OptionError(NumbagradError, ValueError):
    """An option a numbagrad function does not accept: an unknown pass name, a count below 1."""


class BackendError(NumbagradError):
    """A backend that cannot run here (no GPU, missing package) or cannot lower a graph."""


class MemoryBudgetError(NumbagradError):
    """A training step whose arena cannot fit the memory budget it was compiled under."""


class SavedModelError(NumbagradError):
    """A file that ``numbagrad.load`` cannot read as a saved compiled model."""


class NonFiniteError(NumbagradError, FloatingPointError):
    """A NaN or infinity: anomaly mode (``check_finite``) names the graph, op, layer, node and
    index where the first one appeared; ``numbagrad train`` stops on a non-finite loss."""


class OpCheckError(NumbagradError, AssertionError):
    """``numbagrad.library.opcheck`` found a custom op whose parts disagree: its shape rule,
    a kernel or template, its VJP rule or a save/load round trip (which, and by how much)."""


class GradCheckError(NumbagradError, AssertionError):
    """``numbagrad.gradcheck`` found gradients that differ from central finite differences."""


class KernelWarning(RuntimeWarning):
    """A custom op with no kernel for the backend it was compiled for runs its NumPy reference
    there (given once per op and backend; ``strict=True`` makes it an error)."""


class CacheWarning(RuntimeWarning):
    """An on-disk kernel cache that numbagrad could not use as found: a damaged entry it removed
    and compiled again, or a directory it cannot write (kernels then compile in memory)."""


class DistributedError(NumbagradError):
    """Data-parallel training that cannot go on: MPI missing, processes that compiled
    different steps, a process that stopped with an error or stopped answering."""


class OnnxError(NumbagradError, ValueError):
    """An ONNX file or model that ``numbagrad.from_onnx`` refuses: unreadable, truncated,
    hostile (external data outside the model's folder, huge declared shapes), or using
    operators numbagrad cannot import; or a graph ``numbagrad.to_onnx`` cannot export."""
