"""What a user passes on: `befori-tui report` (charts in one HTML file), `compare` (runs side by side) and
`export` (one row per level, CSV or JSON).

A front end of its own: it reads saved sessions (TOML + raw JSONL, docs/results.md) through befori_tui.core and
never imports the live front ends (befori_tui.ui, befori_tui.headless). Charts need the optional extra
`befori-tui[report]` (matplotlib); compare and export need nothing beyond the core.
"""
