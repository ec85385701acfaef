"""The ``aplock`` command: the command line (``command``), host-wide inspection
(``inspect``), the leaders' files (``leaders``) and the demo (``demo``). Nothing in the
library imports this package."""
