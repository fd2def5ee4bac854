"""`tulle up`: the local mesh on one machine.

Manifest resolution into processes and ports (`plan`), free-port allocation
(`ports`), the state directory with its lock, pid file and state JSON
(`state`), the process supervisor (`supervisor`), the per-process log stream
(`logstream`) and the start-up summary (`summary`).
"""
