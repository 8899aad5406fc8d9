"""The ``callrec`` command line: main() and the command table in main.py, one module per command group."""
