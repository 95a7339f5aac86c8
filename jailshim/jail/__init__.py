"""Everything that touches the jail on disk: safe paths, mounts, the process's powers."""
