"""Preference classifier: rendering, style features, encoder + head, training task."""
