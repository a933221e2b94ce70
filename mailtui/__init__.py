"""mailtui: a small, durable SMTP/POP3 mail server you run and watch in a terminal."""

__version__ = "0.1.0"
