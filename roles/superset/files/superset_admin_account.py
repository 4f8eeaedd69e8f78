#!/usr/bin/env python3
"""Make Superset's admin account exist with the configured password.

What ``superset fab create-admin`` and ``fab reset-password`` do, but the password arrives on
stdin: as a command-line argument it would be readable in the process list of the host (and
in Ansible's own command line) while the application boots.

Run with the Superset virtualenv's python and ``SUPERSET_CONFIG_PATH`` set.

stdin: a JSON object {"username", "firstname", "lastname", "email", "password"}

stdout: one line, ``created``, ``password reset`` or ``unchanged``

Exit codes: 0 done, 1 Superset refused to create the account (the reason is on stderr).
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    wanted = json.load(sys.stdin)
    # Imported late: booting Superset takes seconds, and a bad stdin should fail before that.
    from superset.app import create_app  # noqa: PLC0415
    from werkzeug.security import check_password_hash  # noqa: PLC0415

    app = create_app()
    with app.app_context():
        security = app.appbuilder.sm
        user = security.find_user(username=wanted["username"])
        if user is None:
            admin_role = security.find_role(security.auth_role_admin)
            created = security.add_user(wanted["username"], wanted["firstname"], wanted["lastname"],
                                        wanted["email"], admin_role, password=wanted["password"])
            if not created:
                print(f"Superset did not create the account {wanted['username']!r} "
                      "(is its email address taken by another account?)", file=sys.stderr)
                return 1
            print("created")
        elif not check_password_hash(user.password, wanted["password"]):
            security.reset_password(user.id, wanted["password"])
            print("password reset")
        else:
            print("unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
