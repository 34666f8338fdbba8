"""famegui's version (its own module, so that a low layer can read it without importing the public API)."""
VERSION = "0.1.0"
