"""A trainflow process's own life, apart from the work it runs: the Prefect server it chooses before Prefect
is imported (`startup`), the watchdog that stops a temporary server when the command dies (`watchdog`),
runs killed unreported marked Crashed at the next start (`crashed`), UI calls that never fail finished work
(`besteffort`), a failed run's message from what is on disk (`outcome`), and an exit without heap teardown
(`ending`)."""
