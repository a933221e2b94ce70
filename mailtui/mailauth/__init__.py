"""Proving who sent mail: DKIM keys and signatures, SPF, DMARC, MTA-STS, and the records a domain publishes."""
