"""The shared kernel: what the agent, the firmware bridge and the coordinator all use.

errors    the one exception hierarchy (errors for people name the input and what is wrong)
files     atomic writes: a crash never leaves half a file
config    the layered configuration loader (defaults < TOML < environment < flags)
args      the command line's parser class, exit codes and argument types
logs      a daemon's logging (journald priorities under systemd)
sdnotify  the systemd notify protocol
tasks     supervised asyncio tasks: a daemon whose task dies stops, and says so

Every module here is public: another package imports these names, never a private one.
"""
