"""The first module rnnexport's fork server imports (`rnnexport.workers.start_workers` puts it
first in the server's preload), before torch and the runtimes: the server collects garbage as
rnnexport's other processes do (`rnnexport.workers.collect_less`) while it imports them.

Importing this module changes the garbage collection of the process that imports it: only the
fork server does.
"""

from rnnexport.workers import collect_less

collect_less()
