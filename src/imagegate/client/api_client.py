"""Re-export of ``imagegate_client.api_client`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.api_client import *  # noqa: F403
