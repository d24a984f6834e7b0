"""The lab's kube-controller-manager and kube-scheduler stand-ins, run inside each API stand-in.

Leader-elected on the Lease kube-system/kube-controller-manager; see manager.py.
"""

from runbooks_lib.lab.kubeapi.controllers.manager import run

__all__ = ["run"]
