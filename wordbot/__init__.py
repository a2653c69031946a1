"""wordbot: a small, fast, honest next-word predictor."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import wordbot` stays cheap for the CLI's fast paths.
    if name in ("Predictor", "Prediction"):
        from wordbot import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
