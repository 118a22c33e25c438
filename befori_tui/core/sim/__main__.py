import sys

from befori_tui.core.sim.cli import main

raise SystemExit(main(sys.argv[1:]))
