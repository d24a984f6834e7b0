"""Commands and files on cluster machines over SSH (fabric), with verified host keys.

Import the package as a namespace: ``ssh.run(conn, argv, timeout=...)``.
Two connection kinds share one interface (:class:`BaseConnection`), so callers
never care which one they hold: :class:`Connection` (SSH through fabric) and
:class:`LocalConnection` (this machine, through :func:`runbooks_lib.local.run`).
The test double lives in :mod:`runbooks_lib.testing`.

Modules: ``host`` (Host, the inventory rule), ``result`` (Result, GroupResult,
redacted errors), ``host_keys``, ``base``, ``connection`` (SSH),
``local_connection``, ``commands`` (run, run_group, put, get, text files).
"""

from runbooks_lib.ssh.base import BaseConnection
from runbooks_lib.ssh.commands import get, put, read_text, run, run_group, write_text, write_text_argv
from runbooks_lib.ssh.connection import DEFAULT_CONNECT_TIMEOUT, Connection
from runbooks_lib.ssh.host import Host, from_inventory_host
from runbooks_lib.ssh.host_keys import fingerprint
from runbooks_lib.ssh.local_connection import LocalConnection
from runbooks_lib.ssh.result import GroupResult, Result, failure, group_failure

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "BaseConnection",
    "Connection",
    "GroupResult",
    "Host",
    "LocalConnection",
    "Result",
    "failure",
    "fingerprint",
    "from_inventory_host",
    "get",
    "group_failure",
    "put",
    "read_text",
    "run",
    "run_group",
    "write_text",
    "write_text_argv",
]
