"""Re-export of ``imagegate_client.streaming`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.streaming import *  # noqa: F403
