"""zoneinit package."""
