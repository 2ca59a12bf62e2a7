"""Re-export of ``imagegate_client.configuration`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.configuration import *  # noqa: F403
