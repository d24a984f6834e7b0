"""The lab's kubelet stand-in: registers a Node, heartbeats, and runs the pods bound to it.

Run it as ``python -m runbooks_lib.lab.kubelet --kubeconfig PATH --config
/etc/kubernetes/kubelet-config.yaml --hostname-override NAME --node-ip IP``.
Pods of the test app's images become real processes; other pods are reported
Running without one (see runtime.py for the port scheme).
"""
