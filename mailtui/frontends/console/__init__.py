"""The console: a thin Textual front end on the core's event stream.

``model`` folds events into what the panels show and imports no Textual;
``app`` owns the core and applies a batch of events to the widgets a few
times a second; ``widgets`` holds one module per panel and ``dialogs`` the
modal forms, each returning a typed result.
"""
