"""The one exception hierarchy of geoseg.

Every error a user can cause derives from :class:`GeosegError` and from the builtin that
fits, so ``except FileNotFoundError`` keeps working for callers who do not know geoseg.
Messages are one line: what was given, what was expected, how to fix it.
"""


class GeosegError(Exception):
    """Root of all errors geoseg raises on purpose."""


class InputNotFoundError(GeosegError, FileNotFoundError):
    """An input file (scene, model, labels, config) does not exist."""


class InvalidInputError(GeosegError, ValueError):
    """An input exists but cannot be used as given (not a raster, wrong bands, no CRS...)."""


class BundleError(GeosegError, ValueError):
    """A model file is not a geoseg bundle, or its metadata is inconsistent."""


class ConfigError(GeosegError, ValueError):
    """A configuration value or command-line option is invalid."""


class OutputExistsError(GeosegError, FileExistsError):
    """The final output exists and --overwrite was not given."""


class OutputNotWritableError(GeosegError, PermissionError):
    """The output location cannot be created or written."""


class IncompleteRunError(GeosegError, RuntimeError):
    """A step found the results of earlier steps incomplete (a block's part file or a
    block row missing): the run was interrupted or a block failed; rerun the scene."""


class DeviceError(GeosegError, RuntimeError):
    """The device cannot run the model as asked: out of memory, no such CUDA device, a GPU
    busy or in exclusive mode, a torch build without kernels for it, or ``--compile``
    without its compiler. Fails the scene it happened in, in one line."""


class ModelOutputError(GeosegError, ArithmeticError):
    """The network produced values that are not numbers (NaN or infinity): nothing is
    written from them."""
