"""The HTTP API Lambda: runs, statistics, jobs and notification preferences behind JWT scopes."""
