"""aihf: align policies from demonstrations and preferences in one training stage."""

from . import losses
from .errors import DataError

__version__ = "0.1.0"

__all__ = ["DataError", "losses", "__version__"]
