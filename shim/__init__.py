"""containerd-shim-zone-v2: containerd's shim v2 for zones (one shim per pod, each pod in its own zone).

| module | what |
| --- | --- |
| `shim.main` | the console script: `start`, `delete`, and the long-running shim daemon |
| `shim.launch` | `start`/`delete` as containerd 1.6 calls them: pod grouping, socket address, daemonising |
| `shim.bundle` | a bundle's config.json and the CRI annotations in it (pod id, sandbox or container) |
| `shim.backends` | which ZoneBackend the daemon runs (`ZONE_SHIM_BACKEND`, else `shim.zone`) |
| `shim.ttrpc` | containerd's ttrpc protocol: framing, threaded server, client |
| `shim.protos` | containerd 1.6's protobuf messages, generated |
| `shim.task_service` | the Task service (Create, Start, ... Shutdown) over the backend seam |
| `shim.zone_backend` | the backend seam: the Protocol a zone backend implements |
| `shim.process` | one container's or exec's state machine (created/running/paused/stopped) and exit waiters |
| `shim.stdio` | containerd's stdio FIFOs (or files) bridged to the backend's byte streams |
| `shim.events` | task events, published in order to containerd without blocking Task calls |
| `shim.metrics` | backend statistics -> the cgroup Metrics containerd's CRI decodes |
| `shim.runtime_options` | the runtime handler's options (`ConfigPath`) containerd sends with a task |
| `shim.zone` | the zone backend: each pod in a zone under QEMU, driven over IDM (its own table) |

Nothing here is imported at package import; protobuf is loaded by the modules that need it.
"""
