"""``pcache top``: the live Textual console. Reaches the router only through :mod:`pcache.client`."""
