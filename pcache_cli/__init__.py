"""The ``pcache`` command line (Typer). Reaches the router only through :mod:`pcache.client`."""
