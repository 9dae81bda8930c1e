"""Sub-commands of the ``pclr`` command line.

Each module defines ``add_parser(subparsers)``, which registers its sub-command and sets
``func`` (called with the parsed arguments, returning the exit code). Modules import their heavy
dependencies inside ``func`` so that ``pclr --help`` stays fast.

May import: any package; nothing in pclr_jax imports commands.
"""
