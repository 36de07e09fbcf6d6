"""Run names: `<pipeline>-<UTC time>-<32 random bits>`, claimed in the store before use (the
claim itself is `layout.claim_run`, or `localfiles.create_only` where pydantic is not
imported). Standard library only: `conveyor run` names a run before it knows whether it needs
more."""

from __future__ import annotations

import os
from datetime import UTC, datetime

CLAIM_ATTEMPTS = 8


def new_run_name(pipeline: str) -> str:
    """`<pipeline>-<UTC time>-<32 random bits>`, at most 63 characters (a label value). Names
    started in the same second can still repeat (n²/2³³: about one in 20 for 20,000), so a run
    claims its name in the store before using it (`executor.claim_name`)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline[:38].rstrip('-.')}-{stamp}-{os.urandom(4).hex()}"
