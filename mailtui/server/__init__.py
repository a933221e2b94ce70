"""The headless server: every part of the core wired together in one asyncio loop."""
