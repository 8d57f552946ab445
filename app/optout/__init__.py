"""The opt-out detector: whether a text revokes consent, in any of twelve languages, and why (pure)."""

from app.optout.detector import Outcome, Verdict, detect, detect_normalized

__all__ = ["Outcome", "Verdict", "detect", "detect_normalized"]
