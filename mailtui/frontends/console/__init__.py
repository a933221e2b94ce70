"""The console: a thin Textual front end on the server's event stream.

``backend`` says what the console needs from a server (a ``Protocol``);
``lifecycle`` starts and stops it; ``batch`` takes its events a few times a
second and folds them into ``model``, which imports no Textual; ``app``
composes the screen and moves around it, on top of ``workflows``, the admin's
tasks started by the panels' typed messages; ``runner`` runs it all as a
program. ``widgets`` holds one module per panel and ``dialogs`` the modal
forms, each returning a typed result.
"""
