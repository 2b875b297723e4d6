"""`python -m resnets` runs the command line."""

from resnets.cli import main

raise SystemExit(main())
