"""The opt-out detector: whether a text revokes consent, in any of sixteen languages, and why (pure)."""

from app.optout.detector import MAX_CHARS, Outcome, Verdict, detect, detect_normalized, last_steps, symbol_verdict

__all__ = ["MAX_CHARS", "Outcome", "Verdict", "detect", "detect_normalized", "last_steps", "symbol_verdict"]
