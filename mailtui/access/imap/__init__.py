"""IMAP4rev1 (RFC 3501) access: pure layers (to be filled in)."""
