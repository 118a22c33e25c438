"""The live monitor (Textual). Imported lazily by the CLI; the core never imports it."""
