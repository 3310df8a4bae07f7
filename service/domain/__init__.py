"""Business rules, free of any web framework.

Importing any module of this package installs the event feed's session hooks
(:mod:`service.domain.events`), so every transaction that changes the catalog or the ledger
emits its events, whichever entry point (API, CLI) made it.
"""

from service.domain import events as events
