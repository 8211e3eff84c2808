"""`cm serve`: a local web page and JSON API for one- and few-step generation and editing with a loaded model."""

from .app import create_app

__all__ = ["create_app"]
