# Test-only connection plugin for the Molecule scenarios: containers.podman.podman with
# pipelining. The upstream plugin runs `podman exec` without -i, so it cannot pipe a module
# into the container and Ansible falls back to mkdir + copy + exec + rm per task; with
# `podman exec -i` a task is one exec. It also mounts the container only when a file
# is transferred. Selected by .config/molecule/config.yml (provisioner.connection_options).
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
      pipelining:
        description: Pipeline modules into the container.
        default: true
        type: boolean
        env:
          - name: ANSIBLE_PIPELINING
        vars:
          - name: ansible_pipelining
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
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
