# Test-only connection plugin for the Molecule scenarios: containers.podman.podman with
# pipelining. The upstream plugin runs `podman exec` without -i, so it cannot pipe a module
# into the container and Ansible falls back to mkdir + copy + exec + rm per task; with
# `podman exec -i` a task is one exec. As root it enters the container's namespaces with
# nsenter instead: about 20 ms per task rather than 250-450 ms for `podman exec`, which is
# most of a task's cost on these containers (CANDLESTACK_PODMAN_NSENTER=false turns that
# off). It also mounts the container only when a file is transferred.
# Selected by .config/molecule/config.yml (provisioner.connection_options).
# GNU General Public License v3.0+ (derived from containers.podman's podman connection plugin)

from __future__ import annotations

DOCUMENTATION = """
    name: candlestack_podman
    short_description: containers.podman.podman with pipelining (Molecule tests only)
    description:
        - Runs commands in an existing podman container with C(podman exec -i), so that Ansible can pipeline modules.
    options:
      remote_addr:
        description: The ID of the container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
      nsenter:
        description:
          - Run commands with C(nsenter) into the container's namespaces instead of C(podman exec)
            when the controller runs as root and the task runs as root.
          - The process sees the container's filesystem, network, PIDs and environment, but keeps
            the controller's cgroup and capabilities. A JVM's container support then fails to
            read its cgroup (Spark dies with InstanceNotFoundException java.nio:type=BufferPool),
            so JVMs started by a task get C(-XX:-UseContainerSupport).
        default: true
        type: boolean
        env:
          - name: CANDLESTACK_PODMAN_NSENTER
      pipelining:
        description: Pipeline modules into the container.
        default: true
        type: boolean
        env:
          - name: ANSIBLE_PIPELINING
        vars:
          - name: ansible_pipelining
"""

import os
import shlex
import shutil
import subprocess

from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase, ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    transport = "candlestack_podman"
    has_pipelining = True

    def _connect(self):
        ConnectionBase._connect(self)
        self._mount_tried = False
        self._connected = True
        return self

    def _ensure_mount(self):
        if not getattr(self, "_mount_tried", False):
            self._mount_tried = True
            PodmanConnection._connect(self)

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        args = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        pid = self._nsenter_target()
        if pid:
            return self._nsenter(pid, args, in_data)
        exec_args = ["exec"]
        if in_data is not None:
            exec_args.append("-i")
        if self.user:
            exec_args.extend(("--user", self.user))
        return self._podman(exec_args, args, in_data)

    def put_file(self, in_path, out_path):
        self._ensure_mount()
        return super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._ensure_mount()
        return super().fetch_file(in_path, out_path)

    def _nsenter_target(self):
        """The host PID of the container's init, when commands may enter it with nsenter."""
        if not self.get_option("nsenter") or os.geteuid() != 0 or self.user not in (None, "", "root"):
            return None
        if shutil.which("nsenter") is None:
            return None
        # A task is a new connection: cache the PID across tasks, checked against the start time
        # of the process it names, so that a recreated container is looked up again.
        cache = os.path.join(_PID_CACHE_DIR, self._container_id.replace("/", "_"))
        try:
            with open(cache, encoding="ascii") as cached:
                pid, started = cached.read().split()
            if _start_time(pid) == started:
                _environ(pid)  # raises OSError for a process on its way out (a container being removed)
                return pid
        except (OSError, ValueError):
            pass
        rc, stdout, _ = self._podman(["inspect", "--format", "{{.State.Pid}}"])
        pid = to_native(stdout).strip()
        if rc != 0 or not pid.isdigit() or pid == "0":
            return None
        try:
            started = _start_time(pid)
        except OSError:
            # Podman's record names a process that is gone (its state outlived the container's
            # processes): `podman exec` then fails with podman's own explanation.
            return None
        os.makedirs(_PID_CACHE_DIR, mode=0o700, exist_ok=True)
        partial = f"{cache}.{os.getpid()}"
        with open(partial, "w", encoding="ascii") as fresh:
            fresh.write(f"{pid} {started}\n")
        os.replace(partial, cache)
        return pid

    def _nsenter(self, pid, args, in_data):
        env = _environ(pid)
        env.setdefault(b"HOME", b"/root")
        # This process is not in the container's cgroup: keep a JVM from sizing itself by it.
        env[b"JAVA_TOOL_OPTIONS"] = b"-XX:-UseContainerSupport"
        local_cmd = ["nsenter", "--target", pid, "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
                     "--root", "--wd", "--", *args]
        process = subprocess.Popen([to_bytes(arg, errors="surrogate_or_strict") for arg in local_cmd],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        stdout, stderr = process.communicate(input=in_data)
        return process.returncode, stdout, stderr


_PID_CACHE_DIR = "/run/candlestack_podman"


def _environ(pid):
    """The environment of the container's first process: the one its commands get."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item)


def _start_time(pid):
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot.

    Raises OSError for a process that has exited but is not reaped yet (a zombie keeps its
    stat, but nsenter can no longer enter it and its environ cannot be read).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        raise OSError(f"process {pid} has exited")
    return fields[19]
