"""Below the adapters: the HTTP wire to upstream providers (aiohttp under httpx's API) and
the SSRF-guarded fetcher of caller- and upstream-given image URLs."""
