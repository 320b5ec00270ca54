"""One case per semantic rule: each bad config fails with the JSON path of the offending value."""

from __future__ import annotations

import pytest

from styrolite.errors import ConfigError
from styrolite.spec import default_config, parse_config


def ns(c: dict, *types: str) -> None:
    c["linux"]["namespaces"] += [{"type": t} for t in types]


def userns(c: dict) -> None:
    ns(c, "user")
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]


def seccomp(c: dict, **fields) -> dict:
    c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", **fields}
    return c["linux"]["seccomp"]


def rule(name: str, mutate, path: str, message: str):
    return pytest.param(mutate, path, message, id=name)


RULES = [
    # ociVersion
    rule("version-not-semver", lambda c: c.update(ociVersion="1.0"), "ociVersion", "is not a SemVer version"),
    rule("version-newer-minor-unknown-field", lambda c: (c.update(ociVersion="1.9.0"), c["linux"].update(warp={})),
         "linux.warp", "unknown field in an ociVersion 1.9.0 config"),
    rule("version-major-2", lambda c: c.update(ociVersion="2.0.0"), "ociVersion", "implements the 1.x runtime-spec"),
    rule("version-zero", lambda c: c.update(ociVersion="0.5.0"), "ociVersion", "unsupported version"),
    # root and process presence
    rule("root-missing", lambda c: c.pop("root"), "root", "required object is missing"),
    rule("root-path-empty", lambda c: c["root"].update(path=""), "root.path", "must not be empty"),
    rule("process-missing", lambda c: c.pop("process"), "process", "required object is missing"),
    # process
    rule("args-empty", lambda c: c["process"].update(args=[]), "process.args", "at least the program"),
    rule("cwd-relative", lambda c: c["process"].update(cwd="tmp"), "process.cwd", 'cwd "tmp" must be absolute'),
    rule("env-no-equals", lambda c: c["process"]["env"].append("JUSTKEY"), "process.env[2]", "KEY=VALUE"),
    rule("env-empty-key", lambda c: c["process"]["env"].insert(0, "=x"), "process.env[0]", "KEY=VALUE"),
    rule("uid-negative", lambda c: c["process"]["user"].update(uid=-1), "process.user.uid", "out of range"),
    rule("gid-too-big", lambda c: c["process"]["user"].update(gid=2**32), "process.user.gid", "out of range"),
    rule("additional-gid", lambda c: c["process"]["user"].update(additionalGids=[1, -5]),
         "process.user.additionalGids[1]", "out of range"),
    rule("umask", lambda c: c["process"]["user"].update(umask=0o1000), "process.user.umask", "out of range"),
    rule("capability-empty", lambda c: c["process"]["capabilities"]["effective"].append(""),
         "process.capabilities.effective[13]", "must not be empty"),
    rule("rlimit-unknown", lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_FOO", "soft": 1, "hard": 1}),
         "process.rlimits[1].type", 'unknown rlimit type "RLIMIT_FOO" (expected one of: RLIMIT_CPU'),
    rule("rlimit-soft-over-hard", lambda c: c["process"]["rlimits"][0].update(soft=2048),
         "process.rlimits[0].soft", "soft limit 2048 exceeds hard limit 1024"),
    rule("rlimit-duplicate", lambda c: c["process"]["rlimits"].append(dict(c["process"]["rlimits"][0])),
         "process.rlimits[1].type", "duplicate rlimit RLIMIT_NOFILE"),
    rule("rlimit-negative", lambda c: c["process"]["rlimits"][0].update(soft=-1), "process.rlimits[0].soft",
         "out of range"),
    rule("oom-score-adj", lambda c: c["process"].update(oomScoreAdj=1001), "process.oomScoreAdj", "out of range"),
    rule("io-priority-class", lambda c: c["process"].update(ioPriority={"class": "RT"}),
         "process.ioPriority.class", "unknown I/O priority class"),
    rule("scheduler-policy", lambda c: c["process"].update(scheduler={"policy": "SCHED_FAST"}),
         "process.scheduler.policy", "unknown scheduler policy"),
    # mounts
    rule("mount-relative", lambda c: c["mounts"].append({"destination": "data"}), "mounts[7].destination",
         'destination "data" must be absolute'),
    rule("mount-dotdot", lambda c: c["mounts"].append({"destination": "/data/../etc"}), "mounts[7].destination",
         "must not contain '..'"),
    rule("bind-without-source", lambda c: c["mounts"].append({"destination": "/d", "options": ["rbind"]}),
         "mounts[7].source", "a bind mount needs a source"),
    rule("mount-mapping-size", lambda c: c["mounts"].append({
        "destination": "/d", "uidMappings": [{"containerID": 0, "hostID": 0, "size": 0}],
        "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}]}),
         "mounts[7].uidMappings[0].size", "must be greater than zero"),
    rule("mount-mapping-half", lambda c: c["mounts"].append({
        "destination": "/d", "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}]}),
         "mounts[7]", "needs both uidMappings and gidMappings"),
    # hooks
    rule("hook-relative", lambda c: c.update(hooks={"poststart": [{"path": "bin/hook"}]}),
         "hooks.poststart[0].path", "must be absolute"),
    rule("hook-create-runtime", lambda c: c.update(hooks={"createRuntime": [{"path": "/ok"}, {"path": "x"}]}),
         "hooks.createRuntime[1].path", "must be absolute"),
    rule("hook-timeout", lambda c: c.update(hooks={"prestart": [{"path": "/h", "timeout": 0}]}),
         "hooks.prestart[0].timeout", "greater than zero"),
    rule("hook-env", lambda c: c.update(hooks={"poststop": [{"path": "/h", "env": ["X"]}]}),
         "hooks.poststop[0].env[0]", "KEY=VALUE"),
    # hostname / domainname
    rule("hostname-without-uts", lambda c: c["linux"].update(namespaces=[{"type": "pid"}]), "hostname",
         "requires a uts namespace"),
    rule("domainname-without-uts", lambda c: (c.pop("hostname"), c.update(domainname="x"),
                                              c["linux"].update(namespaces=[])), "domainname",
         "requires a uts namespace"),
    # namespaces
    rule("namespace-unknown", lambda c: c["linux"]["namespaces"].__setitem__(2, {"type": "foo"}),
         "linux.namespaces[2].type",
         'unknown namespace type "foo" (expected one of: cgroup, ipc, mount, network, pid, time, user, uts)'),
    rule("namespace-duplicate", lambda c: ns(c, "pid"), "linux.namespaces[5].type",
         'duplicate namespace type "pid" (also at linux.namespaces[0])'),
    rule("namespace-path-relative", lambda c: c["linux"]["namespaces"].__setitem__(1, {"type": "ipc", "path": "x"}),
         "linux.namespaces[1].path", "must be absolute"),
    # user namespace and mappings
    rule("userns-without-uid-mappings", lambda c: ns(c, "user"), "linux.uidMappings",
         "a new user namespace requires at least one mapping"),
    rule("userns-without-gid-mappings", lambda c: (ns(c, "user"), c["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}])), "linux.gidMappings", "requires at least one"),
    rule("mappings-without-userns", lambda c: c["linux"].update(
        uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}]), "linux.uidMappings", "require a user namespace"),
    rule("mapping-size-zero", lambda c: (userns(c), c["linux"]["gidMappings"][0].update(size=0)),
         "linux.gidMappings[0].size", "must be greater than zero, got 0"),
    rule("mapping-overflow", lambda c: (userns(c), c["linux"]["uidMappings"][0].update(hostID=2**32 - 1, size=2)),
         "linux.uidMappings[0].size", "overflow"),
    rule("mapping-host-id-range", lambda c: (userns(c), c["linux"]["uidMappings"][0].update(hostID=-1)),
         "linux.uidMappings[0].hostID", "out of range"),
    # time namespace
    rule("time-offsets-without-timens", lambda c: c["linux"].update(timeOffsets={"monotonic": {"secs": 1}}),
         "linux.timeOffsets", "require a time namespace"),
    rule("time-offsets-joined-timens", lambda c: (c["linux"]["namespaces"].append({"type": "time", "path": "/t"}),
                                                  c["linux"].update(timeOffsets={"boottime": {"secs": 1}})),
         "linux.timeOffsets", "cannot be set on a joined time namespace"),
    rule("time-offsets-unknown-clock", lambda c: (ns(c, "time"), c["linux"].update(timeOffsets={"realtime": {}})),
         "linux.timeOffsets.realtime", 'unknown clock "realtime" (expected one of: boottime, monotonic)'),
    rule("time-offsets-nanosecs", lambda c: (ns(c, "time"), c["linux"].update(
        timeOffsets={"boottime": {"nanosecs": 10**9}})), "linux.timeOffsets.boottime.nanosecs", "out of range"),
    # devices
    rule("device-type", lambda c: c["linux"].update(devices=[{"type": "x", "path": "/dev/x"}]),
         "linux.devices[0].type", 'unknown device type "x" (expected one of: c, b, u, p)'),
    rule("device-relative", lambda c: c["linux"].update(devices=[{"type": "c", "path": "dev/x", "major": 1,
                                                                  "minor": 1}]),
         "linux.devices[0].path", "must be absolute"),
    rule("device-root", lambda c: c["linux"].update(devices=[{"type": "c", "path": "/", "major": 1, "minor": 1}]),
         "linux.devices[0].path", "must name a file"),
    rule("device-dotdot", lambda c: c["linux"].update(devices=[{"type": "c", "path": "/dev/../etc/x", "major": 1,
                                                                "minor": 1}]),
         "linux.devices[0].path", "must not contain '..'"),
    rule("device-major-missing", lambda c: c["linux"].update(devices=[{"type": "b", "path": "/dev/sda"}]),
         "linux.devices[0].major", 'required for device type "b"'),
    rule("device-file-mode", lambda c: c["linux"].update(devices=[
        {"type": "p", "path": "/dev/fifo", "fileMode": 0o1000000}]), "linux.devices[0].fileMode", "out of range"),
    rule("device-cgroup-access", lambda c: c["linux"]["resources"]["devices"][0].update(access="rwx"),
         "linux.resources.devices[0].access", "combination of r, w and m"),
    rule("device-cgroup-type", lambda c: c["linux"]["resources"]["devices"][0].update(type="u"),
         "linux.resources.devices[0].type", "unknown device type"),
    rule("intel-rdt", lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt",
         "Intel RDT (resctrl) is not supported"),
    rule("net-devices", lambda c: c["linux"].update(netDevices={"eth1": {}}), "linux.netDevices", "not supported"),
    # rootfs propagation, cgroups path, masked/readonly paths, personality
    rule("rootfs-propagation", lambda c: c["linux"].update(rootfsPropagation="recursive"),
         "linux.rootfsPropagation", 'unknown propagation "recursive" (expected one of: private, rprivate'),
    rule("cgroups-path-dotdot", lambda c: c["linux"].update(cgroupsPath="/a/../../b"), "linux.cgroupsPath",
         "must not contain '..'"),
    rule("masked-relative", lambda c: c["linux"]["maskedPaths"].append("proc/kcore"), "linux.maskedPaths[12]",
         "must be absolute"),
    rule("readonly-relative", lambda c: c["linux"]["readonlyPaths"].insert(0, "proc"), "linux.readonlyPaths[0]",
         "must be absolute"),
    rule("personality", lambda c: c["linux"].update(personality={"domain": "BSD"}), "linux.personality.domain",
         "unknown personality domain"),
    # sysctl
    rule("sysctl-net-without-netns", lambda c: (c["linux"].update(namespaces=[{"type": "uts"}]),
                                                c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})),
         'linux.sysctl["net.ipv4.ip_forward"]', "requires a network namespace"),
    rule("sysctl-shm-without-ipc", lambda c: (c["linux"].update(namespaces=[{"type": "uts"}]),
                                              c["linux"].update(sysctl={"kernel.shmmax": "1"})),
         'linux.sysctl["kernel.shmmax"]', "requires a ipc namespace"),
    rule("sysctl-mqueue-without-ipc", lambda c: (c["linux"].update(namespaces=[{"type": "uts"}]),
                                                 c["linux"].update(sysctl={"fs.mqueue.msg_max": "1"})),
         'linux.sysctl["fs.mqueue.msg_max"]', "requires a ipc namespace"),
    rule("sysctl-hostname-without-uts", lambda c: (c.pop("hostname"), c["linux"].update(namespaces=[]),
                                                   c["linux"].update(sysctl={"kernel.hostname": "x"})),
         'linux.sysctl["kernel.hostname"]', 'conflicts with the "hostname" field'),
    rule("sysctl-hostname-with-uts", lambda c: c["linux"].update(sysctl={"kernel.hostname": "x"}),
         'linux.sysctl["kernel.hostname"]', 'conflicts with the "hostname" field'),
    rule("sysctl-domainname-without-uts", lambda c: (c.pop("hostname"), c["linux"].update(namespaces=[]),
                                                     c["linux"].update(sysctl={"kernel.domainname": "x"})),
         'linux.sysctl["kernel.domainname"]', "requires a uts namespace"),
    rule("sysctl-not-namespaced", lambda c: c["linux"].update(sysctl={"vm.swappiness": "1"}),
         'linux.sysctl["vm.swappiness"]', "not namespaced"),
    # seccomp
    rule("seccomp-default-action", lambda c: seccomp(c, defaultAction="SCMP_ACT_EXPLODE"),
         "linux.seccomp.defaultAction", 'unknown seccomp action "SCMP_ACT_EXPLODE" (expected one of: SCMP_ACT_KILL'),
    rule("seccomp-arch", lambda c: seccomp(c, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
         "linux.seccomp.architectures[1]", 'unknown architecture "SCMP_ARCH_Z80"'),
    rule("seccomp-flag", lambda c: seccomp(c, flags=["SECCOMP_FILTER_FLAG_FAST"]), "linux.seccomp.flags[0]",
         "unknown seccomp flag"),
    rule("seccomp-rule-action", lambda c: seccomp(c, syscalls=[{"names": ["read"], "action": "SCMP_ACT_NOPE"}]),
         "linux.seccomp.syscalls[0].action", "unknown seccomp action"),
    rule("seccomp-rule-names-empty", lambda c: seccomp(c, syscalls=[{"names": [], "action": "SCMP_ACT_LOG"}]),
         "linux.seccomp.syscalls[0].names", "at least one syscall"),
    rule("seccomp-op", lambda c: seccomp(c, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]),
         "linux.seccomp.syscalls[0].args[1].op", 'unknown seccomp operator "SCMP_CMP_ABOUT" (expected one of: '
                                                 "SCMP_CMP_NE, SCMP_CMP_LT"),
    rule("seccomp-arg-index", lambda c: seccomp(c, syscalls=[{
        "names": ["read"], "action": "SCMP_ACT_TRAP", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]),
         "linux.seccomp.syscalls[0].args[0].index", "out of range (0 to 5)"),
    rule("seccomp-notify-needs-listener", lambda c: seccomp(c, syscalls=[{"names": ["mount"],
                                                                          "action": "SCMP_ACT_NOTIFY"}]),
         "linux.seccomp.listenerPath", "required when a rule uses SCMP_ACT_NOTIFY"),
    rule("seccomp-notify-default", lambda c: seccomp(c, defaultAction="SCMP_ACT_NOTIFY"),
         "linux.seccomp.defaultAction", "cannot be the default action"),
]


@pytest.mark.parametrize(("mutate", "path", "message"), RULES)
def test_rule(mutate, path, message):
    config = default_config()
    mutate(config)
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert info.value.path == path, str(info.value)
    assert message in info.value.message


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: c.update(ociVersion="1.0.2-dev"), id="version-prerelease"),
        pytest.param(lambda c: c.update(ociVersion="1.1.0+build.5"), id="version-build"),
        pytest.param(lambda c: c.update(ociVersion="1.2.1"), id="version-1.2.1"),
        pytest.param(lambda c: c["process"]["env"].append("EMPTY="), id="env-empty-value"),
        pytest.param(lambda c: (ns(c, "user"), c["linux"]["namespaces"][-1].update(path="/proc/1/ns/user")),
                     id="joined-userns-needs-no-mappings"),
        pytest.param(lambda c: (ns(c, "time"), c["linux"].update(timeOffsets={"boottime": {"secs": -5}})),
                     id="time-offsets-with-timens"),
        pytest.param(lambda c: c["linux"].update(sysctl={"net.ipv4.ip_forward": "1", "kernel.sem": "1 2 3 4",
                                                         "kernel.domainname": "x"}), id="namespaced-sysctls"),
        pytest.param(lambda c: c["linux"].update(devices=[{"type": "p", "path": "/dev/fifo"}]), id="fifo-device"),
        pytest.param(lambda c: seccomp(c, listenerPath="/run/agent.sock", syscalls=[
            {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]), id="seccomp-notify-with-listener"),
        pytest.param(lambda c: c["process"]["capabilities"].update(bounding=["CAP_CHECKPOINT_RESTORE"]),
                     id="capability-40"),
        pytest.param(lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_STACK", "soft": 2**64 - 1,
                                                               "hard": 2**64 - 1}), id="rlimit-infinity"),
        pytest.param(lambda c: c["linux"]["resources"].update(pids={"limit": -1}), id="pids-unlimited"),
    ],
)
def test_valid_variants_are_accepted(mutate):
    config = default_config()
    mutate(config)
    parse_config(config)


ACCEPTED = [
    pytest.param(lambda c: c.update(ociVersion="1.3.0"), id="version-1.3"),
    pytest.param(lambda c: c.update(ociVersion="1.9.0"), id="version-newer-minor-with-known-fields"),
    pytest.param(lambda c: (c.update(ociVersion="1.9.0"), c.update(windows={"layerFolders": []})),
                 id="version-newer-minor-other-platform"),
    pytest.param(lambda c: c["process"]["capabilities"]["effective"].append("CAP_FLY"), id="capability-unknown"),
    pytest.param(lambda c: c["process"]["capabilities"].update(ambient=["CAP_41"]), id="capability-past-40"),
    pytest.param(lambda c: c["linux"].update(devices=[{"type": "c", "path": "/etc/x", "major": 1, "minor": 3}]),
                 id="device-outside-dev"),
    pytest.param(lambda c: c["linux"].update(devices=[{"type": "c", "path": "/dev/null2", "major": 1, "minor": 3,
                                                       "fileMode": 0o20666}]), id="device-mode-with-type-bits"),
    pytest.param(lambda c: c["linux"]["resources"].update(pids={"limit": 0}), id="pids-limit-zero"),
    pytest.param(lambda c: c["linux"]["resources"].update(blockIO={"weight": 0}), id="blkio-weight-zero"),
]


@pytest.mark.parametrize("mutate", ACCEPTED)
def test_accepted_like_runc(mutate):
    config = default_config()
    mutate(config)
    parse_config(config)
