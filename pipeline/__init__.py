"""`fakedetect.pipeline`: the DAG (pipeline.py), its typed config (config.py) and the runners."""
