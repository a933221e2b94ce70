"""Sending mail on: MX lookups, the delivery scheduler and attempts, retries, bounces."""
