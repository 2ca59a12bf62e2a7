"""Below the adapters: the HTTP wire to upstream providers (aiohttp under httpx's API)."""
