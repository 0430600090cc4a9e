"""The identity fields the header and tag providers publish, in one place so the two stay alike."""

from __future__ import annotations

from mlflow_descope_auth._core import Identity


def identity_fields(identity: Identity) -> dict[str, str]:
    """Field name -> value; lists are comma-separated, absent values are left out."""
    fields = {
        "user_id": identity.user_id,
        "username": identity.username,
        "email": identity.email or "",
        "name": identity.name or "",
        "roles": ",".join(identity.roles),
        "permissions": ",".join(identity.permissions),
        "tenants": ",".join(identity.tenants),
    }
    return {k: v for k, v in fields.items() if v}
