"""Taking mail in: SMTP sessions, relay policy, and the intake that makes a message durable.

Read in this order:

    smtp.py            SmtpContext (one per service) and SmtpSession: connection limits, greeting,
                       HELO/EHLO, STARTTLS, the error budget, events; MAIL/RCPT/DATA asking the modules below
    listen.py          binding a service's listeners: plain, or implicit TLS with a handshake timeout
    rules.py           SessionRules: what a service allows (InboundRules = port 25)
    submission.py      SubmissionRules: ports 587/465, AUTH first, the sender owned by the login
    policy.py          Peer and the relay policy: registered client? local user? relay? (pure)
    transaction.py     MAIL/RCPT/DATA syntax, SIZE/BODY/SMTPUTF8, limits, the Transaction (pure)
    data.py            reading DATA to <CRLF>.<CRLF> in chunks, with size limit and timeout
    message.py         after DATA: unstuffing, loop and line checks, MessageCheck seam, Received header
    auth.py            SMTP AUTH decisions behind the shared login throttle
    intake.py          local Maildir copies and the spool entry, fsync'd before the 250
    slots.py           open connections, in total and per IP
    aiosmtpd_compat.py every use of aiosmtpd's internals (guarded by tests/receive/test_aiosmtpd_compat.py)
"""
