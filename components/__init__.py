"""Custom TFX components and the module code TFX components call."""
