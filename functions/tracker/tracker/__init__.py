"""The tracker Lambdas: exact statistics and retry schedules from the runs stream; the lease sweeper."""
