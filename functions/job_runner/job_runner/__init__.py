"""The job runner Lambda: turns an invocation into exactly one tracked run."""
