"""Job kinds that exist only for the tests."""
