"""What a containerd shim needs on the host to run a Kubernetes pod in a zone.

* :mod:`host.pod.network` -- the pod network namespace (made by containerd + CNI) joined to the zone's NIC:
  a tap device beside the CNI veth, tc ``mirred`` redirects both ways (Kata's "tcfilter" mode), and the
  address/route/DNS description the zone's network phase applies;
* :mod:`host.pod.snapshot` and :mod:`host.pod.rootfs` -- containerd's rootfs mounts (overlayfs snapshots)
  -> one read-only, owner-shifted, digest-pinned erofs/squashfs image, cached by snapshot identity;
* such images are attached to a running zone and removed again by the zone's backend
  (``Backend.attach_disk``, :mod:`host.backends.hotplug`: QEMU QMP, Xen ``xl``).

See host/pod/README.md for the design and the measurements behind it.
"""
