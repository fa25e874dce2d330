"""What the smoke job prints, shared with the asset that reads it (no Ray import here)."""

RESULT_PREFIX = "DML_RESULT "
