"""OCI content for zones: image references, media types and manifests, a client for the OCI distribution API
(pull and push), and the host's content-addressed store shared by every zone.

It imports nothing from the rest of the project: the host (``zonehost pull/run REF``) and the builders
(``zonebuild`` pushing the kernel and extension images) both import it. See docs/images.md.

Main entry points: :func:`zoneoci.reference.parse_reference`, :class:`zoneoci.client.RegistryClient`,
:class:`zoneoci.store.ContentStore`, :func:`zoneoci.pull.pull`, :func:`zoneoci.pull.local_image`,
:func:`zoneoci.push.push`, :mod:`zoneoci.commands`.
"""
