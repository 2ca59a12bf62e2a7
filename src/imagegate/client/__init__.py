"""Re-export of the SDK, which ships as its own distribution ``imagegate-client``.

The code lives in ``clients/python`` (import ``imagegate_client``); this name stays so that
code written against ``imagegate.client`` keeps working. The names come from the SDK's own
``__all__``, so the two lists cannot drift apart.
"""

from imagegate_client import *  # noqa: F403
from imagegate_client import __all__ as __all__
