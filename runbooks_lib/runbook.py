"""The shape every runbook shares, in one namespace for notebooks.

Confirmation gate (:mod:`runbooks_lib.gate`), bounded waits
(:mod:`runbooks_lib.waits`), step records and the JSON summary
(:mod:`runbooks_lib.records`) and redaction of secrets
(:mod:`runbooks_lib.redaction`). Nothing here touches a cluster.
"""

from runbooks_lib.gate import confirm
from runbooks_lib.records import StepHandle, StepRecord, Steps, summary_path_for, write_summary
from runbooks_lib.redaction import REDACTED, LineRedactor, redact, redact_data
from runbooks_lib.waits import CheckOutcome, Waited, wait_for

__all__ = [
    "REDACTED", "CheckOutcome", "LineRedactor", "StepHandle", "StepRecord", "Steps", "Waited",
    "confirm", "redact", "redact_data", "summary_path_for", "wait_for", "write_summary",
]
