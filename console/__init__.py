"""The operators' console: backlog, lag and its history, half messages and the audit log."""
