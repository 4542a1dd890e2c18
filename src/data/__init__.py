"""Data layer: one record type per task, validated, bad rows quarantined with a reason."""
