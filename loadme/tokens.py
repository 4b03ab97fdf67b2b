"""Result tokens: an HMAC of a slot (run id, step, and item and attempt where not default) under
the app's result key (loadme.slot.Slot.token_message).

The token goes to the container as a secure environment value and comes back with its result;
`stage2` accepts a result only with the right token.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from loadme.slot import Slot

TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")  # what result_token makes: a SHA-256 hexdigest


def result_token(key: bytes, slot: Slot) -> str:
    """The token the container of `slot` must present with its result."""
    return hmac.new(key, slot.token_message, hashlib.sha256).hexdigest()


def verify_result_token(key: bytes, slot: Slot, token: str) -> bool:
    """True when `token` is the right one for `slot`; constant time. Never raises: anything that is
    not 64 lowercase hex characters is refused before any HMAC is computed."""
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        # compare_digest raises TypeError on a str with non-ASCII characters; the format itself is public.
        return False
    return hmac.compare_digest(result_token(key, slot).encode("ascii"), token.encode("ascii"))
