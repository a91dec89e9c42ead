"""`fakedetect.components`: custom TFX components and the module code TFX components call.

The custom artifact types are importable as `fakedetect.IngestReport` / `fakedetect.Robustness`,
the names ML Metadata records and KFP v2 imports them by (fakedetect/__init__.py).
"""
