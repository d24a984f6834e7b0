"""The embedded lab: real Debian machines (systemd-nspawn) on this host, and stand-ins."""
