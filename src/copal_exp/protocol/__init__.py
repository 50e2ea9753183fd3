"""The continual-pruning protocol: a job's settings, the job itself, its directory, state plan and cache, evaluation rounds, memory plan, continual state, export, loggers and launchers."""
