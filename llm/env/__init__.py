"""Host side of npubox: spec → image → devices → container. Light: never imports torch."""
