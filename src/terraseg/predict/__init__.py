"""Sliding-window prediction over scenes of any size, streamed window by window."""
