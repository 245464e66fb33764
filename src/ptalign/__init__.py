"""ptalign: align open-weight language models with prospect-theoretic utility."""

__version__ = "0.1.0"
