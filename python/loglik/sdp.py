"""sdp: functional API (validation and dispatch to the compiled core, or the reference)."""

from __future__ import annotations

__all__: list[str] = []
