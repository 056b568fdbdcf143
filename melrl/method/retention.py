"""Retention: the share of constructed meta-experiences that are kept (the paper's Fig. 9 quantity)."""

from __future__ import annotations


def retention_ratio(kept: int, constructed: int) -> float:
    """Kept / constructed meta-experiences (paper Fig. 9); 0.0 when none was constructed."""
    if kept < 0 or constructed < 0 or kept > constructed:
        raise ValueError(f"need 0 <= kept <= constructed, got kept={kept}, constructed={constructed}")
    return kept / constructed if constructed else 0.0
