"""Re-export of ``imagegate_client.images_api`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.images_api import *  # noqa: F403
