"""Showing numbers to people: terminal sparklines and PNG plots."""
