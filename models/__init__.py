"""Score networks; importing this package registers NCSN++ under the name 'ncsnpp'."""
from . import ncsnpp  # noqa: F401  (registers the model)
from .utils import create_model, get_model, get_score_fn, register_model  # noqa: F401
