"""The zone config: what the host asks PID 1 to do (docs/zone-config.md).

``document`` is the schema (records, canonical JSON), ``parser`` the one strict parser (for the config
disk and for IDM ``container.create``; errors are ``ZoneConfigError`` naming the JSON path), ``diskformat``
the raw ``ZONECFG1`` disk, ``plan`` PID 1's own view of it (``LaunchPlan``), ``idrange`` the user-namespace
id range host and zone share.
"""
