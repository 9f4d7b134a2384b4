"""Who may change what: everyone signed in sees everything; changes are the owner's or staff's."""

from __future__ import annotations

from typing import Any


def may_change(user: Any, owner_id: int) -> bool:
    """Stop, clone, resubmit, deploy, delete: the owner or staff (everyone sees everything)."""
    return user.is_staff or user.pk == owner_id
