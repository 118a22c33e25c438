from befori_tui.cli import main

raise SystemExit(main())
