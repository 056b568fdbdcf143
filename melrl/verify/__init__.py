"""Verification: final-answer extraction and sandboxed, time-bounded math-verify checks."""
