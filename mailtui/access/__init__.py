"""Reading mail: POP3 and IMAP access to the local Maildirs."""
