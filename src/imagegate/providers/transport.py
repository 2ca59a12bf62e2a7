"""Re-export: the upstream HTTP client now lives in ``imagegate.upstream``."""

from imagegate.upstream.client import UpstreamClient
from imagegate.upstream.transport import AiohttpTransport

__all__ = ["AiohttpTransport", "UpstreamClient"]
