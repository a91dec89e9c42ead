"""`python -m pipeline` is the `fakedetect` command."""
from pipeline.cli import main

main()  # pylint: disable=no-value-for-parameter
