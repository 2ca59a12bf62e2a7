"""Re-export of ``imagegate_client.errors`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.errors import *  # noqa: F403
