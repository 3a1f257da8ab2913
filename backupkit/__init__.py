"""backupkit: deduplicating, encrypted backups."""
__version__ = "0.1.0"
