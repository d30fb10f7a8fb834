"""docutray-watch: watch folders, run documents through DocuTray steps, deliver results."""

from docutray_watch._version import __version__

__all__ = ["__version__"]
