"""Everything PID 1 mounts or reads from a disk: the early file systems (``early``), the table that unmounts
them in reverse order at shutdown (``table``), read-only images and overlays (``images``), the zone's disks,
verified before they are mounted (``disks``, ``verify``), and the config disk (``configdisk``)."""
