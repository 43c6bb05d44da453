"""Peakend's domain: touchpoints, the Customer aggregate and pure metric rules. No I/O."""
