"""The front ends on the core's event stream: the CLI, ``serve``, the console, the demo."""
