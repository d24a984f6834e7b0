"""Front doors that spread clients over the nodes, each with ``setup()`` and ``teardown()``.

Modules: ``runner`` (how commands reach a machine), ``dnsrr`` (DNS
round-robin on the lab DNS server), ``keepalived`` (a VRRP floating IP on the
nodes), ``haproxy`` (a health-checking load balancer on the operator's
machine). Each front door gives the probe a ``target()`` and can report what
it does (VIP moved, server marked down) into a :class:`runbooks_lib.probe.EventLog`.
"""
