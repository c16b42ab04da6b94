"""`tunesmith studio`: a local web page to watch, compare and try runs, and to launch, stop and resume them."""

from tunesmith.studio.app import add_studio, create_studio_app

__all__ = ["add_studio", "create_studio_app"]
