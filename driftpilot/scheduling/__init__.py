"""Scheduling: cron and interval schedules that fire control runs."""
