"""DNS: the one resolver every lookup goes through (MX, A/AAAA, TXT, PTR), with its TTL cache and log."""
