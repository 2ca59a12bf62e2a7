"""Re-export of ``imagegate_client.payload`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.payload import *  # noqa: F403
