"""`python -m fakedetect` is the `fakedetect` command."""
from fakedetect.cli import main

main()  # pylint: disable=no-value-for-parameter
