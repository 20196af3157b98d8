"""KFP workflows of the Rightsizer project (wiring only)."""
