"""Result tokens: an HMAC of (run id, step) under the app's result key.

The token goes to the container as a secure environment value and comes back with its result;
`stage2` accepts a result only with the right token.
"""

from __future__ import annotations

import hashlib
import hmac
import re

TOKEN_PATTERN = re.compile(r"[0-9a-f]{64}")  # what result_token makes: a SHA-256 hexdigest


def result_token(key: bytes, run_id: str, step: int) -> str:
    """The token a run's step must present with its result."""
    return hmac.new(key, f"loadme-result\n{run_id}\n{step}".encode(), hashlib.sha256).hexdigest()


def verify_result_token(key: bytes, run_id: str, step: int, token: str) -> bool:
    """True when `token` is the right one for (run id, step); constant time. Never raises: anything
    that is not 64 lowercase hex characters is refused before any HMAC is computed."""
    if not isinstance(token, str) or not TOKEN_PATTERN.fullmatch(token):
        # compare_digest raises TypeError on a str with non-ASCII characters; the format itself is public.
        return False
    return hmac.compare_digest(result_token(key, run_id, step).encode("ascii"), token.encode("ascii"))
