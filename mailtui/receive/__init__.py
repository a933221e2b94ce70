"""Taking mail in: SMTP sessions, relay policy, and the intake that makes a message durable."""
