"""The long-running service: its lanes and jobs, per-job health, the watchdog, the process lock
and sd_notify."""
