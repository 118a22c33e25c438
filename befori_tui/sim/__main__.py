import sys

from befori_tui.sim.cli import main

raise SystemExit(main(sys.argv[1:]))
