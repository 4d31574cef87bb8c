"""``python -m pcache.router -c CONFIG``: the daemon without the CLI package (``pcache.router.launch``)."""

from pcache.router.launch import main

raise SystemExit(main())
