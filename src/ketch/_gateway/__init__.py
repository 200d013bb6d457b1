"""The web gateway: routing, proxy auth, rate limits and the proxy that carries web traffic."""
