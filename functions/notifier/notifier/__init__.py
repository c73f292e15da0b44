"""Notifier: run transitions -> per-user emails through SES, exactly once; digests and quiet hours."""
