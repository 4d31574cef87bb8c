"""``python -m pcache.sim``: the simulator without the CLI package (see ``pcache.sim.launch``)."""

from pcache.sim.launch import main

raise SystemExit(main())
