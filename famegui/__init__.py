"""famegui: see what a convolutional network looks at (FAME and friends)."""
__version__ = "0.1.0"
