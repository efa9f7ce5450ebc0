"""Errors a user can cause. Every CLI turns a `UserError` into one line on stderr and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input a user can fix: the message says what is wrong, where, and what to do."""
