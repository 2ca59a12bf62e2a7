"""Re-export of ``imagegate_client.models`` (the SDK ships as ``imagegate-client``)."""

from imagegate_client.models import *  # noqa: F403
