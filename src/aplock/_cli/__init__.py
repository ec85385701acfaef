"""The ``aplock`` command: the command line (``command``), host-wide inspection
(``inspect``) and the demo (``demo``). Nothing in the library imports this package."""
