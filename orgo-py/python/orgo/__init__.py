# The compiled extension is `orgo._orgo`; this package re-exports it (its
# types are in `__init__.pyi`) and adds `orgo.aio`, written in Python.
from . import _orgo
from ._orgo import *  # noqa: F401,F403

__doc__ = _orgo.__doc__
__all__ = _orgo.__all__
