"""The window's tabs, one controller widget each; they share an :class:`~famegui.gui.context.AppContext`."""
