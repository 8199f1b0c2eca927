"""aihf: align policies from demonstrations and preferences in one training stage."""

from . import losses
from .errors import ConfigError, DataError, NonFiniteError, TrainingError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "NonFiniteError", "TrainingError", "losses", "__version__"]
