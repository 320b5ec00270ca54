"""The zone backend: each pod in its own zone under QEMU, driven over IDM (``shim.zone.backend``).

| module | what |
| --- | --- |
| `backend` | `PodZoneBackend`: the Task service's `ZoneBackend`, call by call onto the pod zone |
| `boot` | the pod zone up (NIC, config disk, QEMU, IDM link, ready) and down; clean-up after a dead shim |
| `config` | the shim's settings (kernel, initrd, memory, vcpus, state dir, timeouts) from its config file |
| `sandbox` | the pod as CRI describes it in the sandbox spec (identity, hostname, netns, DNS); refusals |
| `disks` | container root images: snapshot -> erofs image -> hot-plugged, shared by the pod's containers |
| `volumes` | a container's OCI mounts classified: zone mounts, copied files, pod volumes, refusals |
| `translate` | a container's OCI config -> `container.create`; a CRI exec -> `exec` |
| `streams` | IDM stream channels as the byte sources/sinks the shim bridges to containerd's FIFOs |
| `stats` | Styrolite's cgroup stats and the zone's metrics -> `ContainerStats` |
| `requests` | the zone's requests through the pod's one link; IDM errors -> containerd's error kinds |
"""
