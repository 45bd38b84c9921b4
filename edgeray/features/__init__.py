"""Point-in-time feature computation (no Ray): a value stamped t uses only events stamped <= t."""
