"""The synthetic generator's former home: it is part of the product now
(``anonstream.synthetic``), which the demo and ``anonstream generate`` need. This name is
kept so that code written against it still imports; new code imports the product's."""

from anonstream.synthetic import *  # noqa: F403
from anonstream.synthetic import __all__ as __all__
