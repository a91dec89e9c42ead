"""Tests: unit tests per module and the end-to-end pipeline runs."""
