"""The strategies, each a unit registered under its spec value (see engine.strategy).

Importing this package registers all of them; the runner does, so every entry point has them.
"""

from ..engine.strategy import register
from .in_place import InPlace
from .parallel import Parallel
from .rebuild import Rebuild
from .replicate import Replicate

for strategy in (InPlace(), Rebuild(), Parallel(), Replicate()):
    register(strategy)
