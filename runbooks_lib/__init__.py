"""Helper library for the Kubespray HA runbooks. Import modules as namespaces."""

__version__ = "0.1.0"
