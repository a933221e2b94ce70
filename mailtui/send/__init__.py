"""Sending mail on: the delivery scheduler, delivery attempts, the SMTP courier, retries, bounces."""
