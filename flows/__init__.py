"""The wiring: the spec schema and loader, the plan of cached tasks, the Prefect flow and the CLI."""
