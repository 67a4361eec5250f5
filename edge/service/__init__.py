"""Running as a service: audit log, systemd watchdog, safe file writes, bounded parsing."""
