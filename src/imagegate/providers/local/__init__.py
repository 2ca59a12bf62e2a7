"""Provider type ``local``: diffusers pipelines served with dynamic batching.

Importing this package never imports torch or diffusers; they load when a ``local``
provider first serves a request.
"""

from imagegate.providers.local.provider import LocalProvider

__all__ = ["LocalProvider"]
