"""The ``adaptloop`` command line, one module per group of commands.

- :mod:`.broker`: the local broker and topics;
- :mod:`.running`: the worker and the demos;
- :mod:`.models`: status, rollback, replay;
- :mod:`.specs`: the models declared live (``adaptloop models add|update|retire|list``);
- :mod:`.keys`: the deployment's model-signing key;
- :mod:`.letters`: dead letters, listed and replayed;
- :mod:`.analysis`: snapshots, audits, reports, schemas.
"""

from adaptloop.cli import running  # noqa: F401,I001 (each registers its commands, in the order help lists them)
from adaptloop.cli import models  # noqa: F401
from adaptloop.cli import specs  # noqa: F401
from adaptloop.cli import keys  # noqa: F401
from adaptloop.cli import letters  # noqa: F401
from adaptloop.cli import analysis  # noqa: F401
from adaptloop.cli import broker  # noqa: F401
from adaptloop.cli.common import app

__all__ = ["app"]
