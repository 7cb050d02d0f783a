"""Classes of failure the outside world reports, as the state machine needs them.

Adapters classify (HTTP status, OAuth error codes, exceptions); the transition
table decides what each class means. Kept apart from the events so adapters can
import the classification without the machine.
"""

from __future__ import annotations

import enum

__all__ = ["FailureClass"]


class FailureClass(enum.Enum):
    """Why a token request (refresh, code exchange, client credentials) failed."""

    #: The grant is dead (``invalid_grant``): this refresh token or code will never work.
    FINAL = "final"
    #: The client registration is gone (``invalid_client``): register again, then retry.
    CLIENT_INVALID = "client_invalid"
    #: Worth retrying later: 5xx, 429, timeouts, connection errors, HTML or malformed JSON.
    TRANSIENT = "transient"
