"""The fakedetect pipeline: its config, DAG, runners and command line."""
