"""One device daemon, two plug-ins: the agent (this machine) and the firmware bridge (a board).

    daemon     the lifecycle both share: state directory, outbox, broker link, supervised
               tasks, the job loop, the watchdog, the status file; signals and exit codes
    publisher  everything a device sends: encoded once, on disk before it is sent, even
               before there is a broker link
    jobs       accepted jobs on disk, refusals, duplicates, stable ack and result ids

The agent plugs in its health collectors and a worker process per measurement; the
bridge plugs in its board link.  Neither knows how the other measures.
"""
