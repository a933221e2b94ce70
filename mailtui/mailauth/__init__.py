"""Proving who sent mail: DKIM keys and signatures, SPF, DMARC, MTA-STS, and the records a domain publishes.

Every DNS question goes through :class:`mailtui.dns.resolver.Resolver`, with
its purpose. The entry points:

* signing (the intake): :class:`.dkimsign.DkimSigner` over :class:`.dkimkeys.DkimKeys`,
  :func:`.dkimsign.signing_domain`;
* checking (the SMTP DATA path): :func:`.authresults.strip_ours`, then
  :func:`.verdict.check_message` -> :class:`.verdict.Verdict`;
* MTA-STS (the courier): :class:`.mtasts.MtaSts`, :func:`.stspolicy.mx_allowed`,
  :func:`.mtasts.refusal`;
* publishing: :func:`.records.domain_report` (``mailtui dns``).
"""
