"""Helpers for tests that drive a real browser (Debian's Chromium, through Playwright)."""
