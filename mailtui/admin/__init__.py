"""Who may use the server and how it is run: clients, mailboxes, admin verbs, control socket."""
