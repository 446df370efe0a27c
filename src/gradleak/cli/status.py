"""Exit statuses of ``gradleak``, one meaning each, so that a script can tell a result from a failure."""

from __future__ import annotations

#: the command did what it was asked
DONE = 0
#: some experiments of a sweep failed (the table names them); the others ran
SOME_FAILED = 1
#: bad input, or a run the machine's memory cannot hold: one line on stderr, nothing run
BAD_INPUT = 2
#: the attack ran and recovered nothing (DAGER found no token sequence): not bad input, and not a result either,
#: so that a script never takes an empty reconstruction for one
NOTHING_RECOVERED = 3
