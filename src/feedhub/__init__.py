"""feedhub: poll news feeds, keep every article, republish one Atom feed per language."""

__version__ = "0.1.0"
