"""The test suite (a package, so every module imports its helpers as `tests.…` whatever
the working directory or rootdir)."""
