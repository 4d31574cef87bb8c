"""pcache: cache-aware routing for fleets of LLM inference replicas.

The engine package. It never imports the user interfaces (``pcache_cli``, ``pcache_console``) nor
Textual or Typer; those reach the router only through :mod:`pcache.client`.
"""

__version__ = "0.1.0"
